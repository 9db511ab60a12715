// Vite builds the app into web/dist, which the origin serves at `/`; Vitest runs the
// component tests in jsdom with Svelte's browser build.
import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

export default defineConfig({
  plugins: [svelte()],
  // Component tests mount Svelte's browser build, not its server build.
  resolve: process.env.VITEST ? { conditions: ['browser'] } : {},
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
  },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/live': 'http://127.0.0.1:8080',
      '/vod': 'http://127.0.0.1:8080',
      '/time': 'http://127.0.0.1:8080',
    },
  },
  test: {
    environment: 'jsdom',
    include: ['tests/unit/**/*.test.js'],
  },
});
