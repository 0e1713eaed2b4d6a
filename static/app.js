// Cadenza's page behaviour. All script lives in files (no inline handlers) so a strict CSP works.
(function () {
  "use strict";

  // The listener's local time rides on every htmx request: the time-of-day context signal ranks
  // with it (calmer late at night, brighter in the morning). The server never guesses from its clock.
  document.addEventListener("htmx:configRequest", function (e) {
    var now = new Date();
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    e.detail.headers["X-Local-Time"] = pad(now.getHours()) + ":" + pad(now.getMinutes());
    try {
      var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (tz) { e.detail.headers["X-Timezone"] = tz; }
    } catch (err) { /* no Intl: the local time above is enough */ }
  });

  // Swap error responses too (htmx 2 does not by default): the server sends a readable partial.
  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) {
      htmx.config.responseHandling = [
        { code: "204", swap: false },
        { code: "[23]..", swap: true },
        { code: "[45]..", swap: true, error: true },
      ];
    }
    setupComposer();
  });

  // A new answer (or error) scrolls into view and takes focus, so keyboard and screen-reader users
  // land on it; the composer stays where it is.
  document.addEventListener("htmx:afterSettle", function (e) {
    var thread = document.getElementById("thread");
    if (!thread || !e.detail || e.detail.target !== thread) return;
    var items = thread.querySelectorAll(":scope > section.answer, :scope > .msg.assistant, :scope > .error");
    var last = items[items.length - 1];
    if (!last) return;
    if (!last.hasAttribute("tabindex")) last.setAttribute("tabindex", "-1");
    last.scrollIntoView({ block: "start" });
    last.focus({ preventScroll: true });
  });

  // --- playing exactly the cited range -------------------------------------------------------
  function playerFor(el) {
    if (el.dataset.audio) return document.querySelector(el.dataset.audio);
    var card = el.closest(".card");
    return card ? card.querySelector("audio") : null;
  }

  function whenReady(audio, fn) {
    if (audio.readyState >= 1) { fn(); return; }
    audio.addEventListener("loadedmetadata", fn, { once: true });
    if (audio.preload === "none") { audio.preload = "auto"; }
    audio.load();
  }

  function playRange(audio, start, end) {
    audio.dataset.free = "";
    audio.dataset.stopAt = end != null ? String(end) : "";
    // The native play button replays this range (a card's "also plays at" is not its cited range).
    audio.dataset.rangeStart = String(start);
    audio.dataset.rangeEnd = end != null ? String(end) : "";
    whenReady(audio, function () {
      audio.currentTime = start;
      var p = audio.play();
      if (p && p.catch) p.catch(function () {});
    });
  }

  // Stop at the end of the cited range.
  document.addEventListener("timeupdate", function (e) {
    var a = e.target;
    if (!(a instanceof HTMLAudioElement)) return;
    var stopAt = parseFloat(a.dataset.stopAt || "");
    if (!isNaN(stopAt) && a.currentTime >= stopAt) {
      a.dataset.stopAt = "";
      a.dataset.reached = "1";  // stopped at the end of its range, not by hand
      a.pause();
    }
  }, true);

  // The native play button of a card's player also plays the cited range only.
  document.addEventListener("play", function (e) {
    var a = e.target;
    if (!(a instanceof HTMLAudioElement) || !a.classList.contains("player") || a.dataset.free === "1") return;
    var start = parseFloat(a.dataset.rangeStart || a.dataset.start || "");
    var end = parseFloat(a.dataset.rangeEnd || a.dataset.end || "");
    if (isNaN(start) || isNaN(end)) return;
    if (a.currentTime < start - 0.5 || a.currentTime >= end - 0.05) a.currentTime = start;
    a.dataset.stopAt = String(end);
  }, true);

  // --- A/B: one control switches between the query and the match at the same relative position ---
  function abState(panel) {
    var a = panel.querySelector(".ab-audio-a"), b = panel.querySelector(".ab-audio-b");
    var span = function (side) {
      return { start: parseFloat(panel.dataset[side + "Start"]), end: parseFloat(panel.dataset[side + "End"]) };
    };
    return { a: a, b: b, ra: span("a"), rb: span("b"), now: panel.dataset.now || "" };
  }

  function abLabel(panel, now) {
    panel.dataset.now = now;
    var toggle = panel.querySelector(".ab-toggle");
    toggle.setAttribute("aria-pressed", now ? "true" : "false");
    toggle.textContent = now === "a" ? "⇄ Switch to B (the match)" : now === "b" ? "⇄ Switch to A (your passage)" : "▶ Play A, then switch";
    var say = panel.querySelector(".ab-now");
    if (now) say.textContent = "Now playing " + (now === "a" ? "A: your passage" : "B: the match");
    panel.classList.toggle("playing-a", now === "a");
    panel.classList.toggle("playing-b", now === "b");
  }

  function abSwitch(panel) {
    var s = abState(panel);
    var from = s.now === "a" ? s.a : s.now === "b" ? s.b : null;
    var rFrom = s.now === "a" ? s.ra : s.rb;
    var next = s.now === "a" ? "b" : "a";
    var to = next === "a" ? s.a : s.b, rTo = next === "a" ? s.ra : s.rb;
    // The same relative position: as far into the other passage as we were into this one.
    var offset = from ? Math.max(0, from.currentTime - rFrom.start) : 0;
    offset = Math.min(offset, Math.max(0, rTo.end - rTo.start - 0.1));
    if (from) { from.dataset.stopAt = ""; from.pause(); }
    abLabel(panel, next);
    to.dataset.stopAt = String(rTo.end);
    whenReady(to, function () {
      to.currentTime = rTo.start + offset;
      var p = to.play();
      if (p && p.catch) p.catch(function () {});
    });
  }

  function abStop(panel) {
    var s = abState(panel);
    [s.a, s.b].forEach(function (x) { if (x) { x.dataset.stopAt = ""; x.pause(); } });
    abLabel(panel, "");
  }

  // A side that reached the end of its passage ends the A/B.
  document.addEventListener("pause", function (e) {
    var x = e.target;
    if (!(x instanceof HTMLAudioElement)) return;
    var panel = x.closest(".ab-panel");
    if (!panel) return;
    var s = abState(panel);
    var mine = (s.now === "a" && x === s.a) || (s.now === "b" && x === s.b);
    if (mine && x.dataset.stopAt === "") abLabel(panel, "");
  }, true);

  // --- a moment path plays as a queue: each step's 10 s, then the next -----------------------
  function pathPlayStep(note, i) {
    var steps = note.querySelectorAll(".path-step:not(.removed)");
    note.querySelectorAll(".path-step.playing").forEach(function (x) { x.classList.remove("playing"); });
    var say = note.querySelector(".path-now");
    if (i >= steps.length) { note.dataset.pathAt = ""; say.textContent = "The path has ended."; return; }
    var step = steps[i], audio = step.querySelector("audio");
    note.dataset.pathAt = String(i);
    step.classList.add("playing");
    say.textContent = "Step " + (i + 1) + " of " + steps.length + ": " + step.querySelector(".title").textContent;
    playRange(audio, parseFloat(step.dataset.start), parseFloat(step.dataset.end));
  }

  // A step that reached its end (not one paused by hand) hands over to the next.
  document.addEventListener("pause", function (e) {
    var x = e.target;
    if (!(x instanceof HTMLAudioElement) || !x.classList.contains("path-audio")) return;
    var note = x.closest(".msg.path");
    if (!note || note.dataset.pathAt === "" || note.dataset.pathAt == null) return;
    var steps = note.querySelectorAll(".path-step:not(.removed)");
    var i = parseInt(note.dataset.pathAt, 10);
    if (steps[i] && steps[i].querySelector("audio") === x && x.dataset.stopAt === "" && x.dataset.reached === "1") {
      x.dataset.reached = "";
      pathPlayStep(note, i + 1);
    }
  }, true);

  function playFree(audio, at) {
    whenReady(audio, function () {
      audio.dataset.free = "1";
      audio.dataset.stopAt = "";
      audio.currentTime = at;
      var p = audio.play();
      if (p && p.catch) p.catch(function () {});
    });
  }

  document.addEventListener("click", function (e) {
    var strip = e.target.closest(".map-strip");
    if (strip) {
      // A click on a moment map plays that track from the clicked point.
      var svg = strip.querySelector("svg"), audio = document.querySelector(strip.dataset.audio);
      if (svg && audio) {
        var r = svg.getBoundingClientRect();
        var at = Math.max(0, (e.clientX - r.left) / r.width) * parseFloat(svg.dataset.duration);
        document.querySelectorAll(".map-audio").forEach(function (x) { if (x !== audio) x.pause(); });
        playFree(audio, at);
      }
      return;
    }
    var pp = e.target.closest(".path-play");
    if (pp) { pathPlayStep(pp.closest(".msg.path"), 0); return; }
    var abt = e.target.closest(".ab-toggle");
    if (abt) { abSwitch(abt.closest(".ab-panel")); return; }
    var abs = e.target.closest(".ab-stop");
    if (abs) { abStop(abs.closest(".ab-panel")); return; }
    var btn = e.target.closest(".play-range");
    if (btn) {
      var audio = playerFor(btn);
      if (audio) playRange(audio, parseFloat(btn.dataset.start), parseFloat(btn.dataset.end));
      return;
    }
    var from = e.target.closest(".play-from");
    if (from) {
      var a = playerFor(from);
      if (a) {
        whenReady(a, function () {
          a.dataset.free = "1";
          a.dataset.stopAt = "";
          a.currentTime = parseFloat(from.dataset.start);
          var p = a.play();
          if (p && p.catch) p.catch(function () {});
        });
      }
      return;
    }
    var cite = e.target.closest("a.cite");
    if (cite) {
      var card = document.getElementById(cite.getAttribute("href").slice(1));
      if (card) {
        e.preventDefault();
        card.scrollIntoView({ behavior: "smooth", block: "center" });
        card.classList.add("flash");
        setTimeout(function () { card.classList.remove("flash"); }, 1200);
        var ca = card.querySelector("audio");
        if (ca) playRange(ca, parseFloat(card.dataset.start), parseFloat(card.dataset.end));
      }
    }
  });

  // --- the composer: attach, drop, record, choose the passage ---------------------------------
  function setupComposer() {
    var form = document.getElementById("chat-form");
    if (!form) return;
    var input = document.getElementById("clip-file");
    var zone = document.getElementById("drop-zone");
    var nameEl = document.getElementById("clip-name");
    var startEl = document.getElementById("clip-start");
    var passage = document.getElementById("passage");
    var canvas = document.getElementById("waveform");
    var label = document.getElementById("passage-label");
    var recordBtn = document.getElementById("record");
    var state = { peaks: null, duration: 0, start: null };

    function say(text) {
      nameEl.textContent = text;
      nameEl.classList.add("chosen");
    }

    function setFile(file) {
      var dt = new DataTransfer();
      dt.items.add(file);
      input.files = dt.files;
      showFile(file);
    }

    function showFile(file) {
      nameEl.textContent = file.name + " (" + Math.round(file.size / 1024) + " KB)";
      nameEl.classList.add("chosen");
      startEl.value = "";
      state.start = null;
      drawWaveform(file);
    }

    input.addEventListener("change", function () { if (input.files[0]) showFile(input.files[0]); });
    ["dragenter", "dragover"].forEach(function (t) {
      zone.addEventListener(t, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (t) {
      zone.addEventListener(t, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      var f = e.dataTransfer && e.dataTransfer.files[0];
      if (f) setFile(f);
    });

    var recorder = null, chunks = [];
    recordBtn.addEventListener("click", function () {
      if (recorder && recorder.state === "recording") { recorder.stop(); return; }
      if (!navigator.mediaDevices || !window.MediaRecorder) { say("recording is not supported in this browser"); return; }
      navigator.mediaDevices.getUserMedia({ audio: true }).then(function (stream) {
        chunks = [];
        recorder = new MediaRecorder(stream);
        recorder.addEventListener("dataavailable", function (e) { if (e.data.size) chunks.push(e.data); });
        recorder.addEventListener("stop", function () {
          stream.getTracks().forEach(function (t) { t.stop(); });
          recordBtn.textContent = "● Record";
          var type = recorder.mimeType || "audio/webm";
          var ext = type.indexOf("ogg") >= 0 ? ".ogg" : type.indexOf("mp4") >= 0 ? ".m4a" : ".webm";
          setFile(new File(chunks, "recording" + ext, { type: type }));
        });
        recorder.start();
        recordBtn.textContent = "■ Stop";
        var hum = document.getElementById("hum-mode");
        say(hum && hum.checked ? "hum or whistle now… (searched by melody, any key)" : "recording…");
      }).catch(function () { say("microphone not available"); });
    });

    function drawWaveform(file) {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      file.arrayBuffer().then(function (buf) {
        var ctx = new Ctx();
        return ctx.decodeAudioData(buf).then(function (audio) {
          ctx.close();
          var data = audio.getChannelData(0), bins = canvas.width, step = Math.max(1, Math.floor(data.length / bins));
          var peaks = new Float32Array(bins);
          for (var i = 0; i < bins; i++) {
            var m = 0;
            for (var j = i * step; j < Math.min(data.length, (i + 1) * step); j++) { var v = Math.abs(data[j]); if (v > m) m = v; }
            peaks[i] = m;
          }
          state.peaks = peaks; state.duration = audio.duration;
          passage.hidden = false;
          render();
        });
      }).catch(function () { passage.hidden = true; });
    }

    function render() {
      var g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
      g.clearRect(0, 0, w, h);
      if (!state.peaks) return;
      var top = Math.max.apply(null, state.peaks) || 1;
      g.fillStyle = "#5c6bc0";
      for (var i = 0; i < state.peaks.length; i++) {
        var ph = Math.max(1, state.peaks[i] / top * (h - 4));
        g.fillRect(i, (h - ph) / 2, 1, ph);
      }
      if (state.start != null && state.duration > 0) {
        var x = state.start / state.duration * w, ww = Math.min(10, state.duration) / state.duration * w;
        g.fillStyle = "rgba(255, 193, 7, 0.35)";
        g.fillRect(x, 0, ww, h);
        g.strokeStyle = "#ff8f00";
        g.strokeRect(x + 0.5, 0.5, ww - 1, h - 1);
      }
    }

    function fmt(s) { s = Math.round(s); return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0"); }

    var dragging = false;
    function pick(e) {
      if (!state.duration) return;
      var rect = canvas.getBoundingClientRect();
      var frac = (e.clientX - rect.left) / rect.width;
      var win = Math.min(10, state.duration);
      var start = Math.max(0, Math.min(state.duration - win, frac * state.duration - win / 2));
      state.start = Math.round(start * 10) / 10;
      startEl.value = String(state.start);
      label.textContent = "Passage: " + fmt(state.start) + "–" + fmt(state.start + win) + " (drag to move)";
      render();
    }
    canvas.addEventListener("pointerdown", function (e) { dragging = true; canvas.setPointerCapture(e.pointerId); pick(e); });
    canvas.addEventListener("pointermove", function (e) { if (dragging) pick(e); });
    canvas.addEventListener("pointerup", function () { dragging = false; });

    // After a successful send: clear the message and the clip, keep the conversation.
    form.addEventListener("htmx:afterRequest", function (e) {
      if (e.detail.elt !== form || !e.detail.successful) return;
      document.getElementById("message").value = "";
      input.value = "";
      startEl.value = "";
      nameEl.textContent = "or drop an audio file here";
      nameEl.classList.remove("chosen");
      passage.hidden = true;
      state.peaks = null; state.start = null;
    });
  }
})();
