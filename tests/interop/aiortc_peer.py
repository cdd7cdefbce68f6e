"""A Wilddog call endpoint made with aiortc, a WebRTC stack whose DTLS offers nothing but
ECDHE-ECDSA cipher suites (aiortc 1.16 sets exactly that list; this script checks it is still
so and fails otherwise). It speaks the Wilddog v2 protocol to our signaling server, calls a
uid (--call) or answers the first call, sends a test video and a silent audio track, and
prints JSON lines on stdout: `connected` (the DTLS role it played and the cipher suite the
handshake chose), `frames` (video frames it decoded from the peer), `closed`, `error`.

Used by plugins/wilddog/tests/interop.rs, inside a private network namespace: ICE gathers on
127.0.0.1 (aioice leaves loopback out on its own).
"""

import argparse
import asyncio
import fractions
import json
import logging
import os
import sys
import time

import aioice.ice
import aiortc.rtcdtlstransport as dtls
import av
import websockets
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from aiortc.sdp import candidate_from_sdp
from OpenSSL import SSL

ECDSA_ONLY = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)


def say(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


if os.environ.get("AIORTC_DEBUG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

# Loopback is all a private namespace has.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

# Check (and keep) the ECDSA-only cipher list: a newer aiortc that offered more would make
# this test prove nothing.
_set_cipher_list = SSL.Context.set_cipher_list


def _checked_cipher_list(self, ciphers):
    if ciphers != ECDSA_ONLY:
        say("error", message=f"aiortc's DTLS cipher list changed: {ciphers!r}")
        sys.exit(3)
    return _set_cipher_list(self, ciphers)


SSL.Context.set_cipher_list = _checked_cipher_list


class TestVideo(MediaStreamTrack):
    """320x240 frames at 15 fps, a moving bar."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.n = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        self.n += 1
        await asyncio.sleep(max(0, self.start + self.n / 15 - time.time()))
        frame = av.VideoFrame(320, 240, "yuv420p")
        for p in frame.planes:
            p.update(bytes([(self.n * 4) % 256]) * p.buffer_size)
        frame.pts = self.n * 6000
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--call")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()

    ws = await websockets.connect(args.server)
    await ws.send(json.dumps({"type": "connect", "msg": {"token": args.token, "appId": args.app_id, "clientInfo": {"sdk": "aiortc"}}}))
    pc = RTCPeerConnection()
    state = {"cid": None, "peer": None, "frames": 0, "size": None}
    pending = []

    async def send(kind, msg):
        await ws.send(json.dumps({"type": kind, "cid": state["cid"], "to": state["peer"], "msg": msg}))

    @pc.on("track")
    def on_track(track):
        if track.kind != "video":
            return

        async def consume():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                state["frames"] += 1
                state["size"] = (frame.width, frame.height)
                if state["frames"] in (1, 10, 30):
                    say("frames", count=state["frames"], width=frame.width, height=frame.height)

        asyncio.ensure_future(consume())

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState == "connected":
            transport = pc.getTransceivers()[0].receiver.transport
            ssl = transport._ssl
            say("connected", role=transport._role, cipher=ssl.get_cipher_name(), version=ssl.get_cipher_version())
        elif pc.connectionState == "failed":
            say("error", message="connection failed")

    pc.addTrack(TestVideo())
    pc.addTrack(AudioStreamTrack())

    async def add_candidate(msg):
        line = msg.get("sdp") or msg.get("candidate") or ""
        if not line:
            return
        cand = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
        cand.sdpMid = msg.get("sdpMid")
        cand.sdpMLineIndex = msg.get("sdpMLineIndex")
        await pc.addIceCandidate(cand)

    result = {"code": 0}

    async def reader():
        async for raw in ws:
            try:
                frame = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(frame, dict):
                continue
            kind, msg = frame.get("type"), frame.get("msg") or {}
            if kind == "connack":
                if msg.get("code") != 0:
                    say("error", message=f"connack {msg}")
                    result["code"] = 2
                    return
                say("ready")
                if args.call:
                    state["cid"] = "aiortc" + str(int(time.time() * 1000))
                    state["peer"] = args.call
                    await send("call", {"iceServers": msg.get("iceServers", [])})
            elif kind == "call" and state["cid"] is None:
                state["cid"], state["peer"] = frame["cid"], frame["from"]
                await send("accept", {})
            elif frame.get("cid") != state["cid"]:
                continue
            elif kind == "accept":
                await pc.setLocalDescription(await pc.createOffer())
                await send("offer", {"sdp": pc.localDescription.sdp})
            elif kind in ("reject", "busy"):
                say("error", message=kind)
                result["code"] = 1
                return
            elif kind == "offer":
                await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
                for c in pending:
                    await add_candidate(c)
                pending.clear()
                await pc.setLocalDescription(await pc.createAnswer())
                await send("answer", {"sdp": pc.localDescription.sdp})
            elif kind == "answer":
                if os.environ.get("AIORTC_DEBUG"):
                    print(msg["sdp"], file=sys.stderr)
                await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
                for c in pending:
                    await add_candidate(c)
                pending.clear()
            elif kind == "candidate":
                if pc.remoteDescription is None:
                    pending.append(msg)
                else:
                    await add_candidate(msg)
            elif kind == "bye":
                state["peer_left"] = True
                return

    task = asyncio.ensure_future(reader())
    deadline = time.time() + args.seconds
    while time.time() < deadline and state["frames"] < 30 and not task.done():
        await asyncio.sleep(0.1)
    if state["cid"] and state["peer"] and not state.get("peer_left"):
        await send("bye", {})
    say("closed", frames=state["frames"])
    task.cancel()
    await pc.close()
    await ws.close()
    return result["code"]


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
