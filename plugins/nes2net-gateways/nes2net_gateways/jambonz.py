"""jambonz ``listen`` verb gateway (built on FreeSWITCH mod_audio_fork).

jambonz dials the service with subprotocol ``audio.jambonz.org``; the first text frame is JSON
with the call attributes (``callSid``, ``from``, ``to``, ``direction`` ...), ``sampleRate``,
``mixType`` and the verb's ``metadata`` merged in; then binary 16-bit little-endian PCM
(``mono``, ``mixed`` or ``stereo``). With ``passDtmf`` DTMF arrives as JSON text frames
(ignored). ``wsAuth`` gives HTTP Basic credentials. See docs/gateways/jambonz.md.
"""

from __future__ import annotations

from nes2net_gateways.freeswitch import FreeSwitchConfig, FreeSwitchGateway


class JambonzConfig(FreeSwitchConfig):
    """``[gateways.jambonz]`` settings (those of the FreeSWITCH gateway, other defaults).

    ``mix_type`` and ``sample_rate`` apply only if the first frame lacks ``mixType`` /
    ``sampleRate`` (jambonz always sends both). ``username``/``password`` are the ``wsAuth``
    credentials of the verb.
    """

    path: str = "/v1/gateways/jambonz"
    subprotocol: str = "audio.jambonz.org"


class JambonzGateway(FreeSwitchGateway):
    """jambonz ``listen`` (listen only; DTMF frames are ignored)."""

    name = "jambonz"
    Config = JambonzConfig
    subprotocols = ("audio.jambonz.org",)
    call_id_keys = ("callSid",)
    json_only = True
