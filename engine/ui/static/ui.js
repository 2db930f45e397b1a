// durable ui: live refresh and the action forms. No framework, no build step.
// Data from JSON is put on the page with textContent only, never as markup: payloads
// are untrusted. The one innerHTML below takes a fragment the server rendered with
// autoescaping, from this origin.
"use strict";

(function () {
  const POLL_MS = 1000;
  const pollStatus = document.getElementById("poll-status");

  function pad(n, w) { return String(n).padStart(w || 2, "0"); }

  // The same format as the server's fmt_time: local time, to the millisecond.
  function fmtTime(ts) {
    if (ts === null || ts === undefined) return "";
    const d = new Date(ts * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." +
      pad(d.getMilliseconds(), 3);
  }

  // The same format as the server's fmt_duration.
  function fmtDuration(s) {
    s = Math.max(s, 0);
    if (s < 1e-3) return Math.round(s * 1e6) + " µs";
    if (s < 1) return Math.round(s * 1e3) + " ms";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function runUrl(id) { return "/runs/" + encodeURIComponent(id); }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children || []) {
      node.append(child);
    }
    return node;
  }

  function link(id) { return el("a", { href: runUrl(id), textContent: id }); }

  // Poll while the tab is visible; one request at a time, so a slow server is not piled on.
  function poll(tick) {
    let busy = false;
    async function run() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        await tick();
        if (pollStatus) pollStatus.textContent = "live · " + fmtTime(Date.now() / 1000).slice(11, 19);
      } catch (err) {
        if (pollStatus) pollStatus.textContent = "offline: " + err.message;
      } finally {
        busy = false;
      }
    }
    return setInterval(run, POLL_MS);
  }

  async function getJson(url) {
    const resp = await fetch(url, { headers: { accept: "application/json" } });
    if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
    return resp.json();
  }

  // -- the run list ----------------------------------------------------------------------

  function runRow(run) {
    const relation = el("td", { className: "c-rel" });
    const end = run.finished ? run.updated_at : Date.now() / 1000;
    const duration = el("td", { className: "dur", textContent: fmtDuration(end - run.created_at) });
    if (!run.finished) duration.append(" ", el("span", { className: "muted", textContent: "so far" }));
    if (run.parent_run_id) relation.append("child of ", link(run.parent_run_id));
    if (run.forked_from) relation.append("fork of ", link(run.forked_from));
    const error = run.error || "";
    const cells = [
      el("td", {}, [el("a", { className: "rid", href: runUrl(run.run_id), textContent: run.run_id })]),
      el("td", { textContent: run.name }),
      el("td", { className: "c-kind", textContent: run.kind }),
      el("td", {}, [el("span", { className: "status s-" + run.status, textContent: run.status })]),
      el("td", { textContent: fmtTime(run.created_at) }),
      duration,
      el("td", { className: "c-updated", textContent: fmtTime(run.updated_at) }),
      el("td", { className: "num c-seq", textContent: String(run.last_seq) }),
      relation,
      el("td", { className: "err", textContent: error.length > 120 ? error.slice(0, 117) + "..." : error }),
    ];
    const row = el("tr", {}, cells);
    row.dataset.run = run.run_id;
    return row;
  }

  const runsTable = document.getElementById("runs");
  if (runsTable) {
    let last = null;
    poll(async function () {
      const data = await getJson("/api/runs" + location.search);
      const key = JSON.stringify(data.runs);
      if (key === last) return;
      last = key;
      runsTable.tBodies[0].replaceChildren(...data.runs.map(runRow));
      document.getElementById("runs-empty").hidden = data.runs.length > 0;
      const total = document.getElementById("total");
      if (total) total.textContent = String(data.total);
      for (const count of document.querySelectorAll("#counts [data-status] .n")) {
        count.textContent = String(data.counts[count.parentNode.dataset.status] || 0);
      }
    });
  }

  // -- a run: live header and timeline ---------------------------------------------------

  const live = document.getElementById("live");

  async function refreshLive(force) {
    const run = await getJson(live.dataset.api);
    if (!force && run.status === live.dataset.status && String(run.last_seq) === live.dataset.seq) {
      return;
    }
    const resp = await fetch(live.dataset.fragment);
    if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
    live.innerHTML = await resp.text();
    live.dataset.status = run.status;
    live.dataset.seq = String(run.last_seq);
    live.dataset.finished = String(run.finished);
    // A run that has ended takes no more events and cannot be cancelled.
    const actions = document.querySelector(".run-actions");
    if (actions && run.finished) actions.hidden = true;
  }

  if (live) {
    poll(async function () {
      if (live.dataset.finished !== "true") await refreshLive(false);
    });
  }

  // -- actions ---------------------------------------------------------------------------

  async function post(url, body) {
    const resp = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await resp.json(); } catch (err) { /* not JSON: keep the status line */ }
    if (!resp.ok) throw new Error(data.error || resp.status + " " + resp.statusText);
    return data;
  }

  function say(form, text, ok) {
    const msg = form.querySelector(".msg");
    msg.replaceChildren(...(Array.isArray(text) ? text : [text]));
    msg.className = "msg " + (ok ? "ok" : "err");
  }

  function parseObject(text, what) {
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new Error(what + " is not valid JSON: " + err.message);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error(what + " must be a JSON object");
    }
    return value;
  }

  function action(id, handler) {
    const form = document.getElementById(id);
    if (!form) return;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        await handler(form);
      } catch (err) {
        say(form, err.message, false);
      } finally {
        button.disabled = false;
      }
    });
  }

  // Fork: the textarea holds the state at the fork point; only the keys the user
  // changed or added are sent as edits (a fork can set keys, not remove them).
  action("fork-form", async function (form) {
    const original = parseObject(form.state.defaultValue, "the original state");
    const edited = parseObject(form.state.value, "the state");
    const removed = Object.keys(original).filter((k) => !(k in edited));
    if (removed.length) {
      throw new Error("a fork cannot remove keys (" + removed.join(", ") + "); set them to null instead");
    }
    const edits = {};
    for (const [key, value] of Object.entries(edited)) {
      if (JSON.stringify(value) !== JSON.stringify(original[key])) edits[key] = value;
    }
    const body = { at: Number(form.dataset.at), state: edits };
    if (form.run_id.value.trim()) body.run_id = form.run_id.value.trim();
    const data = await post(form.dataset.api, body);
    say(form, ["forked → ", link(data.run_id)], true);
    location.assign(runUrl(data.run_id));
  });

  action("event-form", async function (form) {
    const event = parseObject(form.event.value, "the event");
    const data = await post(form.dataset.api, event);
    say(form, "sent " + data.type + " (" + data.key + ")", true);
    await refreshLive(true);
  });

  action("resume-form", async function (form) {
    if (!window.confirm("Resume run " + form.dataset.run + " from its failing step?")) return;
    const data = await post(form.dataset.api, {});
    say(form, "resumed: " + data.status, true);
    location.reload();
  });

  action("cancel-form", async function (form) {
    if (!window.confirm("Cancel run " + form.dataset.run + "?")) return;
    const data = await post(form.dataset.api, {});
    say(form, data.cancelled ? "cancelled" : "already " + data.status + ": left as it is", true);
    await refreshLive(true);
  });
})();
