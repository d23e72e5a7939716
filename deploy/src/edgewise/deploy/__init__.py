"""What puts brokers, agents and models on devices (service files, broker configuration)."""
