"""HTTP side of the service: dashboard, try-it page, WebRTC signalling, live event feeds."""
