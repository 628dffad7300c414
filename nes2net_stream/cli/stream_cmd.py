"""``nes2net-stream stream`` and ``watch``: stream a file as a call; tail the alert stream."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click


def _line(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "window":
        w, s, r = event["window"], event["score"], event["running"]
        return (f"window {w['index']:>3}  {w['start_s']:7.2f}-{w['end_s']:7.2f}s  "
                f"p(spoof)={s['spoof_probability']:.3f}  running={r['spoof_probability']:.3f}  "
                f"state={event['state'] or 'pending'}")
    if kind == "state":
        previous = event["previous_state"] or "(new)"
        return (f"STATE  {event['call_id']} [{event['channel']}] {previous} -> "
                f"{event['state']}  running p(spoof)={event['running']['spoof_probability']:.3f}")
    if kind == "summary":
        s = event["summary"]
        mean = s["mean_spoof_probability"]
        return (f"SUMMARY {event['call_id']} [{event['channel']}] final={s['final_state']}  "
                f"windows={s['windows_scored']}  speech={s['speech_s']:.1f}s  "
                f"mean p(spoof)={'n/a' if mean is None else f'{mean:.3f}'}  "
                f"end={s['end_reason']}")
    if kind == "error":
        return f"ERROR {event.get('code')}: {event.get('message')}"
    return json.dumps(event)


def _json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object from an option's value; anything else is a usage error naming it."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=option)
    return value


def _timed(text: str, option: str, form: str, example: str) -> tuple[float, str]:
    """``SECONDS:REST`` of a timed option (``--update``, ``--channel-end``)."""
    at, sep, rest = text.partition(":")
    try:
        seconds = float(at)
    except ValueError:
        seconds = -1.0
    if not sep or not seconds >= 0:
        raise click.BadParameter(f"{text!r} is not {form}, e.g. {example!r}",
                                 param_hint=option)
    return seconds, rest


def _update(text: str) -> tuple[float, dict[str, Any]]:
    """``SECONDS:JSON`` of ``--update``."""
    seconds, body = _timed(text, "--update", "SECONDS:JSON", '5:{"account_id": "A-17"}')
    return seconds, _json_object(body, "--update")


def _roles(text: str | None) -> list[str] | None:
    """``--channels caller,agent``: one role per channel of the file (at most two)."""
    if text is None:
        return None
    roles = [r.strip() for r in text.split(",")]
    if not 1 <= len(roles) <= 2 or "" in roles or len(set(roles)) != len(roles):
        raise click.BadParameter(f"{text!r}: one or two distinct roles, e.g. caller,agent",
                                 param_hint="--channels")
    return roles


def _channel_end(text: str, roles: list[str] | None) -> tuple[float, str]:
    """``SECONDS:ROLE`` of ``--channel-end``: a role of ``--channels``."""
    seconds, role = _timed(text, "--channel-end", "SECONDS:ROLE", "30:agent")
    if roles is None or role not in roles:
        raise click.BadParameter(f"{role!r} is not a role of --channels "
                                 f"({','.join(roles) if roles else 'not given'})",
                                 param_hint="--channel-end")
    return seconds, role


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default="ws://127.0.0.1:8080/v1/stream", show_default=True)
@click.option("--realtime/--fast", default=True, show_default=True,
              help="Pace audio at real time, or send as fast as possible.")
@click.option("--encoding", type=click.Choice(["pcm_s16le", "mulaw", "alaw", "opus"]),
              default="mulaw",
              show_default=True)
@click.option("--sample-rate", type=click.Choice(["8000", "16000", "48000"]), default="8000",
              show_default=True)
@click.option("--call-id", default=None)
@click.option("--token", envvar="NES2NET_TOKEN", default=None, help="Bearer token "
              "[$NES2NET_TOKEN].")
@click.option("--metadata", default=None, help="JSON object sent as the call's metadata.")
@click.option("--update", "updates", multiple=True, metavar="SECONDS:JSON",
              help="Merge this JSON object into the call's metadata once SECONDS of audio "
                   "have been sent (an update message; repeat).")
@click.option("--channels", "channels", default=None, metavar="ROLE[,ROLE]",
              help="Keep the file's channels as these parties, all scored (a stereo recording: "
                   "caller,agent); by default the channels are mixed into the caller's.")
@click.option("--channel-end", "channel_ends", multiple=True, metavar="SECONDS:ROLE",
              help="That party leaves after SECONDS of audio: its summary comes then (a "
                   "channel_end message; repeat; roles of --channels).")
@click.option("--json", "as_json", is_flag=True, help="Print raw JSON events.")
def stream(file: Path, url: str, realtime: bool, encoding: str, sample_rate: str,
           call_id: str | None, token: str | None, metadata: str | None,
           updates: tuple[str, ...], channels: str | None, channel_ends: tuple[str, ...],
           as_json: bool) -> None:
    """Stream an audio FILE to the service as one call and print the events it sends back."""
    from nes2net_stream.client import stream_file

    meta = _json_object(metadata, "--metadata") if metadata else {"file": file.name}
    timed = [_update(u) for u in updates]
    roles = _roles(channels)
    ends = [_channel_end(e, roles) for e in channel_ends]
    if encoding == "opus":
        from nes2net_stream.audio import av_codecs

        if roles and len(roles) > 1:
            raise click.UsageError("--encoding opus sends one party (mono): leave out "
                                   "--channels or use another encoding")
        if not av_codecs.available():
            raise click.UsageError("--encoding opus needs PyAV: pip install "
                                   "'nes2net-stream[webrtc]'")

    def show(event: dict[str, Any]) -> None:
        click.echo(json.dumps(event) if as_json else _line(event))
        sys.stdout.flush()

    result = asyncio.run(stream_file(url, file, sample_rate=int(sample_rate), call_id=call_id,
                                     encoding=encoding, realtime=realtime, token=token,
                                     metadata=meta, on_event=show, updates=timed,
                                     channel_roles=roles, channel_ends=ends))
    if result.of_type("error"):
        raise SystemExit(1)


@click.command()
@click.option("--redis-url", envvar="NES2NET_REDIS__URL", default="redis://127.0.0.1:6379/0",
              show_default=True)
@click.option("--key-prefix", default="nes2net", show_default=True)
@click.option("--scores", is_flag=True, help="Also show every window score.")
@click.option("--from-start", is_flag=True, help="Replay the streams from their beginning.")
@click.option("--json", "as_json", is_flag=True, help="Print raw JSON events.")
@click.option("--count", type=int, default=None, help="Exit after this many events.")
def watch(redis_url: str, key_prefix: str, scores: bool, from_start: bool, as_json: bool,
          count: int | None) -> None:
    """Tail the alert stream (and optionally scores) from Redis in the terminal."""
    from nes2net_stream.watch import tail_events

    def show(event: dict[str, Any]) -> None:
        click.echo(json.dumps(event) if as_json else _line(event))
        sys.stdout.flush()

    streams = [f"{key_prefix}:alerts"] + ([f"{key_prefix}:scores"] if scores else [])
    try:
        asyncio.run(tail_events(redis_url, streams, show, from_start=from_start, count=count))
    except KeyboardInterrupt:
        pass
