/// The page at `/`: live plots of one node, for a person with a browser and nothing else.
///
/// Self-contained (inline CSS and script, no CDN): the status port is usually reached through an
/// SSH tunnel from a machine that may have no internet either. It polls `/status?since=REV`
/// every second, so each poll carries only the new steps, and keeps its own bounded copy of the
/// history for the plots.
enum StatusPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>peernode status</title>
    <style>
      :root { --fg: #1d2330; --muted: #6b7280; --line: #e5e7eb; --bg: #f7f8fa; --card: #fff;
              --a: #2563eb; --b: #dc2626; --ok: #15803d; --bad: #b91c1c; }
      * { box-sizing: border-box; }
      body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
      header { padding: 12px 20px; background: var(--card); border-bottom: 1px solid var(--line);
               display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: baseline; }
      header h1 { font-size: 18px; margin: 0 12px 0 0; }
      .kv { color: var(--muted); } .kv b { color: var(--fg); font-weight: 600; font-variant-numeric: tabular-nums; }
      #health { font-weight: 600; padding: 2px 8px; border-radius: 10px; color: #fff; background: var(--muted); }
      #health.ok { background: var(--ok); } #health.bad { background: var(--bad); }
      main { padding: 16px 20px; display: grid; gap: 16px; }
      .plots { display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); }
      .tables { display: grid; gap: 16px; grid-template-columns: minmax(300px, 1fr) 2fr; align-items: start; }
      @media (max-width: 900px) { .tables { grid-template-columns: 1fr; } }
      section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
      section h2 { font-size: 14px; margin: 0 0 8px; display: flex; justify-content: space-between; }
      section h2 span { color: var(--muted); font-weight: 400; font-variant-numeric: tabular-nums; }
      canvas { width: 100%; height: 200px; display: block; }
      table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
      th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); }
      th { color: var(--muted); font-weight: 500; }
      code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
      .legend i { display: inline-block; width: 10px; height: 3px; margin: 0 4px 3px 10px; vertical-align: middle; }
      #error { color: var(--bad); }
    </style>
    </head>
    <body>
    <header>
      <h1>peernode</h1>
      <span id="health">…</span>
      <span class="kv">node <b id="id">–</b></span>
      <span class="kv">role <b id="role">–</b></span>
      <span class="kv">tls <b id="tls">–</b></span>
      <span class="kv">epoch <b id="epoch">–</b></span>
      <span class="kv">revision <b id="revision">–</b></span>
      <span class="kv">digest <b><code id="digest">–</code></b></span>
      <span class="kv">peers <b id="peers">–</b></span>
      <span class="kv">model <b id="model">–</b></span>
      <span class="kv">sent <b id="sent">–</b></span>
      <span class="kv">received <b id="received">–</b></span>
      <span class="kv">uptime <b id="uptime">–</b></span>
      <span id="error"></span>
    </header>
    <main>
      <div class="plots">
      <section><h2>Mean inner loss <span id="lossNow"></span></h2><canvas id="loss"></canvas></section>
      <section><h2><span style="color:inherit;font-weight:600" id="metricTitle">Metric</span> <span id="metricNow"></span></h2><canvas id="metric"></canvas></section>
      <section><h2>Bandwidth per outer step
        <span class="legend"><i style="background:var(--a)"></i>sent<i style="background:var(--b);height:0;border-top:2px dashed var(--b)"></i>received</span></h2>
        <canvas id="bandwidth"></canvas></section>
      </div>
      <div class="tables">
      <section><h2>Events</h2>
        <table><tbody id="events"></tbody></table></section>
      <section><h2>View <span id="viewNote"></span></h2>
        <table><thead><tr><th>#</th><th>node</th><th>control</th><th>data</th><th>ring</th><th></th></tr></thead>
        <tbody id="members"></tbody></table></section>
      </div>
    </main>
    <script>
    "use strict";
    const keep = 500;
    let history = [];
    let lastRevision = null;
    const $ = (id) => document.getElementById(id);
    const num = (v) => typeof v === "number" ? v : Number(v);

    function bytes(n) {
      const units = ["B", "KB", "MB", "GB", "TB"];
      let i = 0; n = num(n);
      while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
      return (i === 0 ? n.toFixed(0) : n.toPrecision(3)) + " " + units[i];
    }
    function duration(s) {
      s = Math.floor(s);
      const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
      return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
    }
    function fmt(v) {
      v = num(v);
      if (!isFinite(v)) return String(v);
      const a = Math.abs(v);
      return a !== 0 && (a < 0.001 || a >= 1e5) ? v.toExponential(2) : v.toPrecision(4);
    }

    // An axis label with as many decimals as the axis range needs, no more.
    function tick(v, range) {
      const decimals = Math.max(0, Math.min(6, 2 - Math.floor(Math.log10(range || 1))));
      return Math.abs(v) >= 1e5 ? v.toExponential(1) : v.toFixed(decimals);
    }

    // One line chart: series = [{values: [[x, y]...], color}], axes with min/max labels.
    function plot(canvas, series, format) {
      const ratio = window.devicePixelRatio || 1;
      const w = canvas.clientWidth, h = canvas.clientHeight;
      if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
        canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
      }
      const g = canvas.getContext("2d");
      g.setTransform(ratio, 0, 0, ratio, 0, 0);
      g.clearRect(0, 0, w, h);
      const pts = series.flatMap((s) => s.values).filter((p) => isFinite(p[1]));
      // What the chart shows, for scripts that load the page (scripts/check-status-page.sh).
      canvas.dataset.points = String(pts.length);
      g.font = "11px system-ui, sans-serif";
      g.fillStyle = "#6b7280";
      if (pts.length === 0) { g.fillText("waiting for the first outer step…", 12, h / 2); return; }
      let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
      let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
      if (x0 === x1) { x0 -= 1; x1 += 1; }
      if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
      const pad = (y1 - y0) * 0.05;
      y0 = y0 >= 0 ? Math.max(0, y0 - pad) : y0 - pad; y1 += pad;
      const left = 64, right = 10, top = 8, bottom = 22;
      const X = (x) => left + (x - x0) / (x1 - x0) * (w - left - right);
      const Y = (y) => top + (1 - (y - y0) / (y1 - y0)) * (h - top - bottom);
      g.strokeStyle = "#e5e7eb"; g.lineWidth = 1;
      g.textAlign = "right"; g.textBaseline = "middle";
      for (let i = 0; i <= 4; i++) {
        const y = y0 + (y1 - y0) * i / 4;
        g.beginPath(); g.moveTo(left, Y(y)); g.lineTo(w - right, Y(y)); g.stroke();
        g.fillText(format(y, y1 - y0), left - 6, Y(y));
      }
      g.textAlign = "center"; g.textBaseline = "top";
      const xs = [[x0, "left"], [(x0 + x1) / 2, "center"], [x1, "right"]];
      for (const [x, align] of xs) { g.textAlign = align; g.fillText("rev " + Math.round(x), X(x), h - bottom + 6); }
      for (const s of series) {
        g.strokeStyle = s.color; g.fillStyle = s.color; g.lineWidth = 2;
        g.setLineDash(s.dash || []);
        g.beginPath();
        let started = false;
        for (const [x, y] of s.values) {
          if (!isFinite(y)) { started = false; continue; }
          if (started) g.lineTo(X(x), Y(y)); else { g.moveTo(X(x), Y(y)); started = true; }
        }
        g.stroke();
        g.setLineDash([]);
        if (s.values.length < 60) for (const [x, y] of s.values) if (isFinite(y)) {
          g.beginPath(); g.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); g.fill();
        }
      }
    }

    function render(s) {
      const health = $("health");
      health.textContent = s.healthy ? "healthy" : s.health;
      health.className = s.healthy ? "ok" : "bad";
      $("id").textContent = s.id;
      $("role").textContent = s.role;
      $("tls").textContent = s.tls === "off" ? "off (plaintext)" : s.tls;
      $("epoch").textContent = s.epoch;
      $("revision").textContent = s.revision;
      $("digest").textContent = s.digest ? s.digest.slice(0, 12) : "–";
      $("peers").textContent = s.peers;
      $("model").textContent = s.model + " / " + s.dataset;
      $("sent").textContent = bytes(s.bytes_sent);
      $("received").textContent = bytes(s.bytes_received);
      $("uptime").textContent = duration(s.uptime_seconds);
      document.title = "peernode " + s.id.slice(0, 8) + " · rev " + s.revision;

      const css = getComputedStyle(document.documentElement);
      const a = css.getPropertyValue("--a").trim(), b = css.getPropertyValue("--b").trim();
      const last = history[history.length - 1];
      $("lossNow").textContent = last ? fmt(last.loss) : "";
      $("metricTitle").textContent = s.metric_name ? s.metric_name + (s.higher_is_better ? " (higher is better)" : " (lower is better)") : "Metric";
      $("metricNow").textContent = last ? fmt(last.metric) : "";
      plot($("loss"), [{ values: history.map((p) => [p.revision, num(p.loss)]), color: a }], tick);
      plot($("metric"), [{ values: history.map((p) => [p.revision, num(p.metric)]), color: "#7c3aed" }], tick);
      plot($("bandwidth"), [
        { values: history.map((p) => [p.revision, num(p.sent_bytes_per_second)]), color: a },
        // Dashed: on a ring, sent and received are nearly equal and would hide each other.
        { values: history.map((p) => [p.revision, num(p.received_bytes_per_second)]), color: b, dash: [6, 4] },
      ], (v) => bytes(v) + "/s");

      const e = s.events, t = s.throughput;
      const rows = [["joins", e.joins], ["leaves", e.leaves], ["deaths", e.deaths], ["aborts", e.aborts],
                    ["retries", e.retries],
                    ["last step", bytes(t.last_step_sent_bytes_per_second) + "/s sent, " + bytes(t.last_step_received_bytes_per_second) + "/s received"],
                    ["overall", bytes(t.overall_sent_bytes_per_second) + "/s sent, " + bytes(t.overall_received_bytes_per_second) + "/s received"]];
      if (last) rows.push(["last step time", fmt(last.inner_seconds) + " s inner, " + fmt(last.communication_seconds) + " s communication"]);
      $("events").replaceChildren(...rows.map(([k, v]) => row([k, v], "td")));

      $("viewNote").textContent = "epoch " + s.epoch + ", coordinator " + (s.coordinator || "–") + ", " + s.members.length + " members";
      $("members").replaceChildren(...s.members.map((m, i) => row([
        i, m.id, m.control, m.in_ring ? m.data : "–", m.in_ring ? "yes" : "no",
        [m.is_coordinator ? "coordinator" : "", m.is_self ? "this node" : ""].filter(Boolean).join(", ")], "td")));
    }

    function row(cells, tag) {
      const tr = document.createElement("tr");
      for (const c of cells) { const td = document.createElement(tag); td.textContent = String(c); tr.appendChild(td); }
      return tr;
    }

    let polling = false;
    async function poll() {
      // One request at a time: two with the same ?since would add the same steps twice.
      if (polling) return;
      polling = true;
      try {
        const url = "status" + (lastRevision === null ? "" : "?since=" + lastRevision);
        const response = await fetch(url, { cache: "no-store" });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const s = await response.json();
        // A restarted node starts again below what we hold: start over.
        if (lastRevision !== null && s.revision < lastRevision) { history = []; lastRevision = null; return; }
        history = history.concat(s.history).slice(-keep);
        if (history.length) lastRevision = history[history.length - 1].revision;
        $("error").textContent = "";
        render(s);
      } catch (err) {
        $("error").textContent = "status unreachable (" + err.message + ")";
        $("health").textContent = "unreachable"; $("health").className = "bad";
      } finally {
        polling = false;
      }
    }
    poll();
    setInterval(poll, 1000);
    window.addEventListener("resize", () => { if (history.length) poll(); });
    </script>
    </body>
    </html>
    """#
}
