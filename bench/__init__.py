"""Side-by-side benchmark of Talos against NATS JetStream and Redis Streams (`make bench`)."""
