// curfew status page: every 2 s, replace the live region with /ui/live
// (the same server-rendered, server-escaped HTML the page loaded with) and
// draw the request rate and mean latency from the differences between
// polls. Nothing here builds markup from data.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live) return; // the login and error pages
  document.documentElement.classList.add("js");
  var EVERY_MS = 2000;
  var POINTS = 60; // two minutes
  var poll = document.getElementById("poll");
  var samples = [];
  var polls = 0;
  var lastOk = new Date();

  function sample() {
    var o = document.getElementById("overview");
    if (!o) return;
    samples.push({
      t: performance.now(),
      requests: Number(o.dataset.requests),
      latency: Number(o.dataset.latencySumS)
    });
    if (samples.length > POINTS + 1) samples.shift();
  }

  // Rate and mean latency between successive samples.
  function series() {
    var rate = [], latency = [];
    for (var i = 1; i < samples.length; i++) {
      var a = samples[i - 1], b = samples[i];
      var dt = (b.t - a.t) / 1000;
      var n = b.requests - a.requests;
      // A restart of curfew resets its counters: no point for that step.
      if (dt <= 0 || n < 0) continue;
      rate.push(n / dt);
      latency.push(n > 0 ? ((b.latency - a.latency) / n) * 1000 : null);
    }
    return { rate: rate, latency: latency };
  }

  function draw(id, values) {
    var line = document.querySelector("#" + id + " polyline");
    if (!line) return;
    var max = 0;
    values.forEach(function (v) { if (v !== null && v > max) max = v; });
    var pts = [];
    values.forEach(function (v, i) {
      if (v === null) return;
      // The newest point at the right edge; older ones to its left.
      var x = 240 - ((values.length - 1 - i) / (POINTS - 1)) * 240;
      var y = 46 - (max > 0 ? (v / max) * 42 : 0);
      pts.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    line.setAttribute("points", pts.join(" "));
    line.parentNode.dataset.points = String(pts.length);
  }

  function last(values) {
    for (var i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  }

  function show() {
    var s = series();
    draw("rate-chart", s.rate);
    draw("latency-chart", s.latency);
    var r = last(s.rate), l = last(s.latency);
    document.getElementById("rate-now").textContent = r === null ? "–" : r.toFixed(1);
    document.getElementById("latency-now").textContent = l === null ? "–" : l.toFixed(1) + " ms";
  }

  function stamp(text, stale) {
    poll.textContent = text;
    poll.classList.toggle("stale", !!stale);
  }

  var busy = false; // one poll at a time: a slow answer is not overtaken

  function refresh() {
    if (document.hidden || busy) return;
    busy = true;
    fetch("/ui/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          window.location.assign("/ui/login");
          throw new Error("logged out");
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html; // server-rendered and escaped, as at load
        polls += 1;
        document.body.dataset.polls = String(polls);
        sample();
        show();
        lastOk = new Date();
        stamp("Live: updated " + lastOk.toLocaleTimeString() + ".", false);
      })
      .catch(function (e) {
        stamp("Not updating (" + e.message + "): the data is from " + lastOk.toLocaleTimeString() + ".", true);
      })
      .then(function () { busy = false; });
  }

  sample();
  show();
  stamp("Live: updating every 2 s.", false);
  setInterval(refresh, EVERY_MS);
  document.addEventListener("visibilitychange", refresh);
  refresh();
})();
