// The console is built at install time (make console) into ../build/console, which
// consoled serves; nothing is fetched from a CDN at run time.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "../build/console",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1200,
  },
});
