"""Built-in gateway plugins of nes2net-stream.

Twilio, Genesys AudioHook, FreeSWITCH, jambonz, Asterisk AudioSocket and WebSocket, Vonage,
Telnyx and Plivo.
"""
