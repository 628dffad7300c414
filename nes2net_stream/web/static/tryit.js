// Try-it page: microphone and/or a sample file -> one WebRTC audio track -> live scores.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const view = {
    connection: "new", callId: null, state: null, running: null, windows: 0, summary: null,
    error: null, points: [], thresholds: {suspicious: 0.5, spoof: 0.8},
  };
  window.tryit = view;  // read by the browser tests
  let pc = null;
  let dc = null;
  let audio = null;     // {ctx, dest, mic}
  let config = null;

  function log(text, cls) {
    const li = N2N.el("li", {class: cls || ""}, new Date().toLocaleTimeString([], {hour12: false}),
                      " ", text);
    $("log").prepend(li);
    while ($("log").children.length > 60) $("log").lastChild.remove();
  }

  function setConn(state) {
    view.connection = state;
    $("conn").textContent = state;
    $("conn").dataset.state = state;
    $("hangup").disabled = !pc;
  }

  function draw() {
    const windowPts = view.points.map((p) => [p.t, p.p]);
    const runningPts = view.points.map((p) => [p.t, p.r]);
    N2N.plot($("plot"), [
      {points: windowPts, color: "#5b6b86", width: 1, dots: true, dotColor: (p) =>
        p >= view.thresholds.spoof ? N2N.stateColor("spoof")
          : p >= view.thresholds.suspicious ? N2N.stateColor("suspicious")
            : N2N.stateColor("bona_fide")},
      {points: runningPts, color: "#e8ecf3", width: 2.5},
    ], {thresholds: view.thresholds, window: 60});
  }

  function showState(state) {
    view.state = state;
    $("state").textContent = N2N.stateLabel(state);
    $("state").dataset.state = String(state);
    $("score").style.color = N2N.stateColor(state);
  }

  function onEvent(msg) {
    switch (msg.type) {
      case "started":
        view.callId = msg.call_id;
        $("call-id").textContent = msg.call_id;
        $("model").textContent = msg.model_id;
        log(`call ${msg.call_id} started (${msg.sample_rate} Hz, windows of ${msg.window_s} s)`);
        break;
      case "window": {
        const r = msg.running.spoof_probability;
        view.windows = msg.running.windows;
        view.running = r;
        view.points.push({t: msg.window.end_s, p: msg.score.spoof_probability, r});
        $("score").textContent = N2N.pct(r);
        $("windows").textContent = String(view.windows);
        $("last-window").textContent =
          `${msg.window.start_s.toFixed(1)}–${msg.window.end_s.toFixed(1)} s: ` +
          N2N.pct(msg.score.spoof_probability);
        showState(msg.state);
        draw();
        break;
      }
      case "state":
        showState(msg.state);
        log(`state ${N2N.stateLabel(msg.previous_state)} → ${N2N.stateLabel(msg.state)} ` +
            `(running ${N2N.pct(msg.running.spoof_probability)})`, "alert " + msg.state);
        break;
      case "summary": {
        view.summary = msg.summary;
        const s = msg.summary;
        $("summary").hidden = false;
        $("summary").dataset.state = String(s.final_state);
        $("summary").textContent = `Call ended (${s.end_reason}): ${N2N.stateLabel(s.final_state)}` +
          `, ${s.windows_scored} windows, mean ${N2N.pct(s.mean_spoof_probability)}, max ` +
          `${N2N.pct(s.max_spoof_probability)}, ${s.speech_s.toFixed(1)} s of speech.`;
        showState(s.final_state);
        break;
      }
      case "error":
        view.error = msg;
        log(`error ${msg.code}: ${msg.message}`, "alert spoof");
        break;
      default:
        break;
    }
  }

  async function waitIce(conn) {
    if (conn.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 3000);  // send what we have after 3 s
      conn.addEventListener("icegatheringstatechange", () => {
        if (conn.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  async function loadConfig() {
    const r = await fetch(N2N.withToken("/v1/webrtc/config"), {headers: N2N.authHeaders()});
    if (!r.ok) throw new Error(`config: HTTP ${r.status}`);
    config = await r.json();
    const sel = $("sample");
    sel.replaceChildren(...config.samples.map((n) => N2N.el("option", {value: n}, n)));
    if (config.samples.includes("synthetic_call.wav")) sel.value = "synthetic_call.wav";
    if (!config.enabled) log(config.error || "WebRTC is disabled on this service", "alert spoof");
  }

  async function connect(withMic) {
    if (pc) {
      if (withMic && !audio.mic) await addMic();
      return;
    }
    const ctx = new AudioContext();
    await ctx.resume();
    audio = {ctx, dest: ctx.createMediaStreamDestination(), mic: null};
    if (withMic) await addMic();
    view.points = [];
    view.summary = null;
    $("summary").hidden = true;
    pc = new RTCPeerConnection({iceServers: config.ice_servers});
    pc.addTrack(audio.dest.stream.getAudioTracks()[0], audio.dest.stream);
    dc = pc.createDataChannel("events");
    dc.onmessage = (e) => onEvent(JSON.parse(e.data));
    pc.onconnectionstatechange = () => setConn(pc ? pc.connectionState : "closed");
    setConn("offering");
    await pc.setLocalDescription(await pc.createOffer());
    await waitIce(pc);
    const callId = "tryit-" + Math.random().toString(36).slice(2, 10);
    const resp = await fetch(N2N.withToken(config.offer_url), {
      method: "POST",
      headers: N2N.authHeaders({"Content-Type": "application/json"}),
      body: JSON.stringify({type: "offer", sdp: pc.localDescription.sdp, call_id: callId,
                            metadata: {page: "tryit", user_agent: navigator.userAgent.slice(0, 120)}}),
    });
    const answer = await resp.json();
    if (!resp.ok) {
      log(`offer refused (${resp.status} ${answer.error.code}): ${answer.error.message}`,
          "alert spoof");
      await teardown();
      return;
    }
    log(`connected to the service, call ${answer.call_ids.join(", ")}`);
    await pc.setRemoteDescription({type: answer.type, sdp: answer.sdp});
  }

  async function addMic() {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
    audio.mic = audio.ctx.createMediaStreamSource(stream);
    audio.mic.connect(audio.dest);
    audio.micStream = stream;
    log("microphone on");
  }

  async function playSample() {
    await connect(false);
    const name = $("sample").value;
    const r = await fetch(`/samples/${encodeURIComponent(name)}`);
    const buffer = await audio.ctx.decodeAudioData(await r.arrayBuffer());
    const src = audio.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(audio.dest);
    if ($("monitor").checked) src.connect(audio.ctx.destination);
    src.onended = () => log(`sample ${name} finished`);
    src.start();
    log(`playing ${name} (${buffer.duration.toFixed(1)} s)`);
  }

  async function teardown() {
    if (pc) pc.close();
    if (audio && audio.micStream) audio.micStream.getTracks().forEach((t) => t.stop());
    if (audio) await audio.ctx.close();
    pc = null; dc = null; audio = null;
    setConn("closed");
  }

  async function hangUp() {
    if (dc && dc.readyState === "open") {
      dc.send(JSON.stringify({type: "stop"}));
      const t0 = Date.now();
      while (!view.summary && Date.now() - t0 < 8000) {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await teardown();
  }

  function guard(fn) {
    return () => fn().catch((err) => { log(String(err), "alert spoof"); view.error = String(err); });
  }

  $("start-mic").addEventListener("click", guard(() => connect(true)));
  $("play-sample").addEventListener("click", guard(playSample));
  $("hangup").addEventListener("click", guard(hangUp));
  $("dash-link").href = N2N.withToken("/dashboard");
  window.addEventListener("resize", draw);
  draw();
  loadConfig().catch((err) => log(String(err), "alert spoof"));
})();
