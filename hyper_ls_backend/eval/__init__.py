"""Offline evaluation of the routing core: replays, simulations and their reports. Not part
of the product's decision path; it calls the same core objects the server does."""
