"""Core services: the rules. They receive adapters and import none of them."""
