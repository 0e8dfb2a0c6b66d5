"""RL algorithms as pure functions (advantages, losses, filters); no I/O, no Ray."""
