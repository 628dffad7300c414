"""CPU per call-second of decoding each RTP codec the SIPREC, Asterisk and Telnyx gateways read.

The bundled human sample call is encoded in 20 ms payloads of each codec (G.722, Opus and AMR
with FFmpeg's encoders through PyAV; G.729, AMR-WB and GSM as random frames of the real frame
sizes: the decoders' work does not depend on the bits), then the
gateway's own decoder (``nes2net_gateways.rtp_payload``) decodes them; G.711 and L16 are the
pass-through baseline. Prints CPU microseconds per call-second and calls one core could decode,
as JSON; decoding is only part of a call's cost (resampling, VAD and scoring follow).

    python benchmarks/rtp_codec_bench.py                 # 60 s of audio per codec
    python benchmarks/rtp_codec_bench.py --smoke
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from nes2net_stream.audio.av_codecs import encode_packets
from nes2net_stream.audio.io import load_audio, resample
from nes2net_stream.bench.engine import emit, environment
from nes2net_stream.demo import sample_path

#: codec -> (rtpmap clock rate, how the payloads are made)
CODECS = {"PCMU": 8000, "L16": 8000, "G722": 8000, "OPUS": 48000, "G729": 8000,
          "AMR": 8000, "AMR-WB": 16000, "GSM": 8000}


def speech(seconds: float, rate: int) -> np.ndarray:
    """The bundled human call, repeated to ``seconds``, at ``rate``."""
    x = load_audio(sample_path("human_call.wav"), sample_rate=8000).samples
    x = np.tile(x, int(np.ceil(seconds * 8000 / len(x))))[:int(seconds * 8000)]
    return resample(x, 8000, rate)


def amr_payload(frame: bytes, bits: int) -> bytes:
    """A bandwidth-efficient RFC 4867 payload of one storage-format frame (``bits`` speech)."""
    ft, speech_bits = frame[0] >> 3, int.from_bytes(frame[1:], "big") >> (-bits % 8)
    value = (15 << 6 | ft << 1 | 1) << bits | speech_bits  # CMR 15, ToC F=0 FT Q=1
    n = 10 + bits
    return (value << (-n % 8)).to_bytes((n + 7) // 8, "big")


def payloads(codec: str, seconds: float) -> list[bytes]:
    """20 ms RTP payloads of ``seconds`` of the sample call in ``codec``."""
    from nes2net_gateways.rtp_amr import AMR_WB

    rng = random.Random(0)
    n = int(seconds * 50)
    if codec == "PCMU":
        return [bytes(rng.getrandbits(8) for _ in range(160))] * n
    if codec == "L16":
        return [bytes(320)] * n
    if codec == "G722":
        return encode_packets("g722", 16000, speech(seconds, 16000), flush=False)
    if codec == "OPUS":
        return encode_packets("libopus", 16000, speech(seconds, 16000),
                              bit_rate=24000, flush=False)
    if codec == "AMR":
        frames = encode_packets("libopencore_amrnb", 8000, speech(seconds, 8000),
                                bit_rate=12200, flush=False)
        return [amr_payload(f, 244) for f in frames]
    if codec == "AMR-WB":  # mode 8, 23.85 kbit/s
        bits = AMR_WB.bits[8]
        return [amr_payload(bytes([8 << 3 | 4]) + rng.getrandbits(bits).to_bytes(
            (bits + 7) // 8, "big"), bits) for _ in range(n)]
    if codec == "GSM":  # 33-byte frames; the top nibble of each is the 0xD signature
        return [bytes([0xD0 | rng.getrandbits(4)]) + bytes(rng.getrandbits(8) for _ in range(32))
                for _ in range(n)]
    return [bytes(rng.getrandbits(8) for _ in range(20)) for _ in range(n)]  # G729


def measure(codec: str, seconds: float) -> dict[str, Any]:
    """Decode one call's payloads of ``codec`` with the gateways' decoder; CPU per call-second."""
    from nes2net_gateways.rtp_payload import CODECS as DECODERS

    packets = payloads(codec, seconds)
    clock = CODECS[codec]
    decoder = DECODERS[codec].decoder(clock, "")
    t0 = time.process_time()
    units = sum(decoder.decode(p)[1] for p in packets)
    cpu = time.process_time() - t0
    audio_s = units / clock
    return {"codec": codec, "payloads": len(packets), "audio_s": round(audio_s, 3),
            "cpu_s": round(cpu, 4),
            "cpu_us_per_call_second": round(cpu / audio_s * 1e6, 1),
            "calls_per_core": round(audio_s / cpu) if cpu > 0 else None,
            "errors": getattr(decoder, "errors", 0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="audio per codec")
    p.add_argument("--codecs", default=",".join(CODECS), help="comma-separated")
    p.add_argument("--smoke", action="store_true", help="2 s per codec")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args()
    seconds = 2.0 if args.smoke else args.seconds
    rows = [measure(c, seconds) for c in args.codecs.split(",")]
    emit({"benchmark": "rtp_codec_decode", "date": datetime.now(UTC).isoformat(timespec="seconds"),
          "environment": environment(torch.device("cpu")), "seconds_per_codec": seconds,
          "rows": rows}, args.out)


if __name__ == "__main__":
    main()
