"""Operations: Flower with authentication, the worker liveness probe, structured logs, task states for Flower."""
