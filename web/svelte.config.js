// Svelte compiler options (defaults); present so the Vite plugin does not search for one.
export default {};
