"""What every wing uses to talk: connections, backoff, discovery and file transfer."""
