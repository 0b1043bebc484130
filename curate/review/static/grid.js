// The review grid: a cursor, keys and clicks that POST decisions. The server is the only source
// of truth: a tile changes only when the server answers that the decision is committed.
(() => {
  "use strict";
  const grid = document.getElementById("grid");
  const tiles = Array.from(grid.querySelectorAll(".tile"));
  const byId = new Map(tiles.map((t) => [t.dataset.id, t]));
  const info = document.getElementById("info");
  const toast = document.getElementById("toast");
  const keys = document.getElementById("keys");
  const size = document.getElementById("tile-size");
  let cursor = -1;
  let queue = Promise.resolve(); // decisions go out one at a time, in the order they were made

  function describe(t) {
    const d = t.dataset;
    return `${d.id} · post ${d.post || "–"} · score ${d.score || "–"} (${d.label}) · ${d.status}` +
      (d.p ? ` · p_reject ${d.p}` : "") + (d.tags ? ` · ${d.tags}` : "");
  }

  function setCursor(i) {
    if (!tiles.length) return;
    i = Math.max(0, Math.min(tiles.length - 1, i));
    if (cursor >= 0) tiles[cursor].classList.remove("cursor");
    cursor = i;
    const t = tiles[i];
    t.classList.add("cursor");
    t.scrollIntoView({ block: "nearest" });
    info.textContent = describe(t);
  }

  function columns() {
    const top = tiles[0].offsetTop;
    let n = 0;
    while (n < tiles.length && tiles[n].offsetTop === top) n++;
    return Math.max(1, n);
  }

  function setStatus(t, status) {
    t.classList.remove("pending", "accepted", "rejected");
    t.classList.add(status);
    t.dataset.status = status;
    if (tiles[cursor] === t) info.textContent = describe(t);
  }

  function showCounts(counts) {
    for (const [k, v] of Object.entries(counts)) {
      const el = document.querySelector(`[data-count="${k}"]`);
      if (el) el.textContent = v.toLocaleString("en-US");
    }
    document.title = `curate review · ${counts.pending} pending`;
  }

  // `request` is called when the previous decision is answered, so a toggle pressed twice quickly
  // reads the status the first press produced, not the one on screen when the key went down.
  function send(url, request) {
    queue = queue.then(async () => {
      const [body, busy] = request();
      if (!body) return null;
      busy.forEach((t) => t.classList.add("saving"));
      try {
        const r = await fetch(url, {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
        const data = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
        for (const c of data.changed) {
          const t = byId.get(c.crop_id);
          if (t) setStatus(t, c.status);
        }
        showCounts(data.counts);
        toast.textContent = "";
        return data;
      } catch (e) {
        toast.textContent = `not saved: ${e.message}`;
      } finally {
        busy.forEach((t) => t.classList.remove("saving"));
      }
    });
    return queue;
  }

  function toggle(t) {
    return send("/api/decide", () => {
      const status = t.dataset.status === "rejected" ? "pending" : "rejected";
      return [{ crop_ids: [t.dataset.id], status, origin: "grid" }, [t]];
    });
  }

  function acceptPage() {
    return send("/api/decide", () => {
      const pending = tiles.filter((t) => t.dataset.status === "pending");
      if (!pending.length) return [null, []];
      return [{ crop_ids: pending.map((t) => t.dataset.id), status: "accepted", origin: "accept-page" }, pending];
    });
  }

  function undo() {
    return send("/api/undo", () => [{}, []]).then((data) => {
      const t = data && data.changed.length ? byId.get(data.changed[0].crop_id) : null;
      if (t) setCursor(tiles.indexOf(t));
    });
  }

  // The reject model trains in the background on the server: the header follows it, the tiles' order
  // changes only when the reviewer moves to another page (never under the cursor).
  const model = document.getElementById("model");
  const modelText = document.getElementById("model-text");
  const belowForm = document.getElementById("below-form");
  const belowP = document.getElementById("below-p");
  const belowN = document.getElementById("below-n");
  const fmt = (v) => Math.round(v).toLocaleString("en-US");

  async function refreshModel() {
    try {
      const r = await fetch(`/api/model?below=${encodeURIComponent(belowP.value)}`, { credentials: "same-origin" });
      if (!r.ok) return;
      const m = await r.json();
      let text;
      if (m.ready) {
        const e = m.estimate;
        text = `reject model: ${fmt(m.held_out)} decisions, held-out AUC ${m.auc.toFixed(2)}; about ` +
          `${fmt(e.expected_bad)} bad crops among ${fmt(e.unreviewed)} unreviewed (90%: ${fmt(e.low)}–${fmt(e.high)})`;
      } else {
        text = `no reject model yet: ${m.why || "it learns once you have rejected and accepted 10 crops each"}`;
        if (m.unusual) text += "; meanwhile the most unusual crops come first";
      }
      if (m.training) text += " · retraining…";
      if (m.problem) text += ` · the last training failed (${m.problem})`;
      modelText.textContent = text;
      model.dataset.ready = m.ready ? "yes" : "no";
      belowForm.hidden = !m.ready;
      belowN.textContent = m.below.crops.toLocaleString("en-US");
      showCounts(m.counts);
    } catch (e) { /* the server is away: the next poll will tell */ }
  }

  function acceptBelow() {
    const p = +belowP.value;
    return send("/api/accept-below", () => [{ p }, []]).then((data) => {
      if (data) toast.textContent = `accepted ${data.changed.length.toLocaleString("en-US")} crops below p ${p} (u undoes them all)`;
      refreshModel();
    });
  }

  function setTile(px) {
    px = Math.max(40, Math.min(256, px));
    document.documentElement.style.setProperty("--tile", `${px}px`);
    size.value = px;
    localStorage.setItem("curate-review-tile", px);
  }

  function go(id) {
    const a = document.getElementById(id);
    if (a) location.href = a.href;
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target.closest("select, input, textarea")) return;
    if (keys.open && e.key !== "?") return; // the dialog handles Esc itself
    const cols = tiles.length ? columns() : 1;
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols };
    if (e.key in moves) {
      setCursor(cursor < 0 ? 0 : cursor + moves[e.key]);
    } else if (e.key === "x" && tiles.length) {
      if (cursor < 0) setCursor(0);
      toggle(tiles[cursor]);
    } else if (e.key === "a") {
      acceptPage();
    } else if (e.key === "u") {
      undo();
    } else if (e.key === "?") {
      keys.open ? keys.close() : keys.showModal();
    } else if (e.key === "n" || e.key === "PageDown") {
      go("next");
    } else if (e.key === "p" || e.key === "PageUp") {
      go("prev");
    } else if (e.key === "+" || e.key === "=") {
      setTile(+size.value + 16);
    } else if (e.key === "-") {
      setTile(+size.value - 16);
    } else {
      return;
    }
    e.preventDefault();
  });

  grid.addEventListener("click", (e) => {
    const t = e.target.closest(".tile");
    if (!t) return;
    setCursor(tiles.indexOf(t));
    toggle(t);
  });
  // AnimeFace's landmarks (eyes, nose, mouth, chin; crop fractions) drawn over the tile under the mouse
  const POINTS = ["left eye", "right eye", "nose", "mouth", "chin"];
  function showLandmarks(t) {
    grid.querySelectorAll(".lm").forEach((d) => d.remove());
    if (!t || !t.dataset.lm) return;
    JSON.parse(t.dataset.lm).forEach(([x, y], k) => {
      const d = document.createElement("span");
      d.className = "lm";
      d.title = POINTS[k] || "";
      d.style.left = `${x * 100}%`;
      d.style.top = `${y * 100}%`;
      t.appendChild(d);
    });
  }
  grid.addEventListener("mouseover", (e) => {
    const t = e.target.closest(".tile");
    if (t) info.textContent = describe(t);
    showLandmarks(t);
  });
  grid.addEventListener("mouseleave", () => showLandmarks(null));
  grid.addEventListener("error", (e) => {
    if (e.target.tagName === "IMG") e.target.closest(".tile").classList.add("broken");
  }, true);

  document.getElementById("help-button").addEventListener("click", () => keys.showModal());
  document.getElementById("accept-below").addEventListener("click", acceptBelow);
  belowP.addEventListener("input", refreshModel);
  setInterval(refreshModel, 3000);
  document.querySelectorAll("#filters select").forEach((s) =>
    s.addEventListener("change", () => document.getElementById("filters").submit()));
  size.addEventListener("input", () => setTile(+size.value));
  setTile(+(localStorage.getItem("curate-review-tile") || size.value));
  window.curateReview = { idle: () => queue, refreshModel }; // lets a test wait until every decision is answered
})();
