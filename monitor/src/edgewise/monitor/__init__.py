"""What people watch: the fleet's topics as Prometheus metrics (host side)."""
