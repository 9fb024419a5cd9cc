"""Reaching peers behind NATs: the dialer (direct → WebRTC → relay), circuit relay,
WebRTC signalling and the asyncio bridge, STUN probes, dial-back, doctor checks."""
