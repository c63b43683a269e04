"""consoled: serves the console's built assets (build/console) behind Envoy."""
