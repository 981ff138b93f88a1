"""WebRTC callers and answerers (aiortc), on loopback only."""
