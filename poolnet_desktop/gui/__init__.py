"""The Qt desktop app. Sees the runtime only through the bridge module."""
