// Mounts a Svelte component into a fresh element of jsdom's document for a test.
import { flushSync, mount, unmount } from 'svelte';

export function render(Component, props) {
  const target = document.createElement('div');
  document.body.appendChild(target);
  const component = mount(Component, { target, props });
  flushSync();
  return {
    target,
    text: (selector) => target.querySelector(selector)?.textContent.trim(),
    destroy() {
      unmount(component);
      target.remove();
    },
  };
}
