"""ethicrec gRPC service: proto <-> domain translation, error mapping, health,
reflection, configuration and `python -m service`. No ranking logic lives here."""
