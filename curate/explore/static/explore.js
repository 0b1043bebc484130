// curate explore: a grid of generated images and a panel that works on the one under the cursor.
// Every image is made on the server (the page sends ids, seeds and numbers, never pixels); an image's
// URL is its PNG, which carries its latent, so a saved image dropped back on the page returns.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const state = JSON.parse($("state").textContent);
  const gallery = $("gallery");
  const toast = $("toast");
  const info = $("info");
  const keys = $("keys");
  const images = []; // the grid, in order: {id, url, label, seed, psi, edits}
  const tiles = new Map(); // id -> its figure
  const marks = new Map(); // id -> "with" | "without"
  let selected = []; // ids, in the order they were selected
  let cursor = -1;
  let base = null; // the grid image the panel works on
  let current = null; // what the panel shows: base, or base moved along directions and edited
  let amounts = {}; // direction name -> slider value
  let panelEdits = []; // edits applied to base in the panel
  let region = [0, 0, 1, 1];
  let directions = state.directions;
  let savedEdits = state.edits;
  let maps = null; // {id, level, layout} of the sheet on show
  let deriveSeq = 0;
  let deriveTimer = null;

  // --- requests: every one counted, so a test (or a person) can wait for the page to settle ---
  let pending = 0;
  const waiters = [];
  function track(promise) {
    pending++;
    return promise.finally(() => {
      if (--pending === 0) waiters.splice(0).forEach((r) => r());
    });
  }
  const idle = () => (pending ? new Promise((r) => waiters.push(r)) : Promise.resolve());

  async function post(url, body, raw) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": raw ? raw.type : "application/json" },
      body: raw ? raw.body : JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
    return data;
  }

  // A request the user waits for: a failure is shown in one line and yields null.
  function call(url, body, raw) {
    return track((async () => {
      document.body.classList.add("working");
      try {
        const data = await post(url, body, raw);
        toast.textContent = "";
        return data;
      } catch (e) {
        toast.textContent = e.message;
        return null;
      } finally {
        if (pending <= 1) document.body.classList.remove("working");
      }
    })());
  }

  const say = (text) => { info.textContent = text; };

  // an element with properties (dataset and style merged in) and children
  function el(tag, props = {}, ...children) {
    const { dataset, style, ...rest } = props;
    const e = Object.assign(document.createElement(tag), rest);
    Object.assign(e.dataset, dataset || {});
    Object.assign(e.style, style || {});
    e.append(...children);
    return e;
  }
  const button = (text, title, onclick, className = "") => el("button", { type: "button", textContent: text, title, onclick, className });
  const nameOf = (im) => (im.seed != null && !im.edits && im.label.startsWith("seed") ? `seed${im.seed}` : `image${im.id}`);
  const caption = (im) => im.label +
    (im.seed != null && !im.label.startsWith("seed") ? ` · seed ${im.seed}` : "") +
    (im.psi != null && im.seed != null ? ` · ψ ${(+im.psi).toFixed(2)}` : "") +
    (im.edits ? ` · ${im.edits} edit${im.edits > 1 ? "s" : ""}` : "");

  // --- the grid ---
  function addTile(im) {
    images.push(im);
    const f = el("figure", { className: "tile", dataset: { id: im.id } },
      el("img", { src: im.url, alt: im.label, decoding: "async" }), el("figcaption", { textContent: caption(im) }));
    gallery.append(f);
    tiles.set(im.id, f);
    $("empty").hidden = true;
    return images.length - 1;
  }

  function columns() {
    const all = [...tiles.values()];
    if (!all.length) return 1;
    const top = all[0].offsetTop;
    let n = 0;
    while (n < all.length && all[n].offsetTop === top) n++;
    return Math.max(1, n);
  }

  function setCursor(i) {
    if (!images.length) return;
    i = Math.max(0, Math.min(images.length - 1, i));
    if (cursor >= 0 && images[cursor]) tiles.get(images[cursor].id).classList.remove("cursor");
    cursor = i;
    const t = tiles.get(images[i].id);
    t.classList.add("cursor");
    t.scrollIntoView({ block: "nearest" });
    if (base !== images[i]) {
      base = images[i];
      resetPanel(false);
    }
    describe();
  }

  function describe() {
    if (base) say(`${caption(base)} · image ${base.id}${selected.length ? ` · ${selected.length} selected` : ""}`);
  }

  function toggleSelect(id) {
    selected = selected.includes(id) ? selected.filter((x) => x !== id) : [...selected, id];
    describe();
    tiles.forEach((t, k) => {
      const n = selected.indexOf(k);
      t.classList.toggle("selected", n >= 0);
      t.dataset.order = n >= 0 ? n + 1 : "";
    });
  }

  function toggleMark(id, kind) {
    marks.get(id) === kind ? marks.delete(id) : marks.set(id, kind);
    const t = tiles.get(id);
    t.classList.toggle("mark-with", marks.get(id) === "with");
    t.classList.toggle("mark-without", marks.get(id) === "without");
    const n = (k) => [...marks.values()].filter((v) => v === k).length;
    $("n-with").textContent = n("with");
    $("n-without").textContent = n("without");
  }

  async function generate() {
    const psi = +$("psi").value;
    const data = await call("/api/generate", { seeds: $("seeds").value, psi });
    if (!data) return;
    const first = images.length;
    data.images.forEach(addTile);
    setCursor(first);
  }

  // --- the panel's image ---
  function showCurrent(im) {
    current = im;
    const img = $("current");
    img.src = im.url;
    img.hidden = false;
    $("current-label").textContent = `${caption(im)} · image ${im.id}`;
    const a = $("download");
    a.href = im.url;
    a.download = `${nameOf(im)}.png`;
    a.hidden = false;
    $("keep").hidden = tiles.has(im.id);
  }

  function resetPanel(keepRegion) {
    amounts = {};
    panelEdits = [];
    deriveSeq++;
    if (!keepRegion) setRegion([0, 0, 1, 1]);
    renderDirections();
    if (base) showCurrent(base);
  }

  function movedBody() {
    const a = Object.fromEntries(Object.entries(amounts).filter(([, v]) => v));
    return { id: base.id, amounts: a };
  }

  // The sliders' image: base moved and edited; only the answer to the latest request is shown.
  function derive() {
    if (!base) return Promise.resolve();
    const body = { ...movedBody(), edits: panelEdits };
    if (!Object.keys(body.amounts).length && !panelEdits.length) {
      deriveSeq++;
      showCurrent(base);
      return Promise.resolve();
    }
    const seq = ++deriveSeq;
    return call("/api/derive", body).then((data) => {
      if (data && seq === deriveSeq) showCurrent(data.image);
    });
  }

  function deriveSoon() {
    clearTimeout(deriveTimer);
    let done;
    track(new Promise((r) => { done = r; }));
    deriveTimer = setTimeout(() => derive().finally(done), 120);
  }

  function keep() {
    if (!current || tiles.has(current.id)) return;
    const i = addTile(current);
    setCursor(i);
  }

  function exportCurrent() {
    if (current) $("download").click();
  }

  // --- region: dragged on the panel's image, in fractions of it ---
  const frame = $("current-frame");
  const box = $("region");
  function setRegion(r) {
    region = r;
    const whole = r[0] === 0 && r[1] === 0 && r[2] === 1 && r[3] === 1;
    box.hidden = whole;
    Object.assign(box.style, { left: `${r[0] * 100}%`, top: `${r[1] * 100}%`,
      width: `${(r[2] - r[0]) * 100}%`, height: `${(r[3] - r[1]) * 100}%` });
    $("region-text").textContent = whole ? "region: whole image" :
      `region: ${r.map((v) => v.toFixed(2)).join(", ")}`;
  }
  let dragFrom = null;
  const at = (e) => {
    const b = $("current").getBoundingClientRect();
    return [Math.min(1, Math.max(0, (e.clientX - b.left) / b.width)), Math.min(1, Math.max(0, (e.clientY - b.top) / b.height))];
  };
  frame.addEventListener("pointerdown", (e) => {
    if ($("current").hidden) return;
    dragFrom = at(e);
    frame.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  frame.addEventListener("pointermove", (e) => {
    if (!dragFrom) return;
    const [x, y] = at(e);
    const r = [Math.min(dragFrom[0], x), Math.min(dragFrom[1], y), Math.max(dragFrom[0], x), Math.max(dragFrom[1], y)];
    if (r[2] - r[0] > 0.01 && r[3] - r[1] > 0.01) setRegion(r);
  });
  frame.addEventListener("pointerup", (e) => {
    if (!dragFrom) return;
    const [x, y] = at(e);
    if (Math.abs(x - dragFrom[0]) < 0.02 || Math.abs(y - dragFrom[1]) < 0.02) setRegion([0, 0, 1, 1]);
    dragFrom = null;
  });

  // --- interpolation ---
  async function interpolate() {
    if (selected.length < 2) {
      toast.textContent = "select two images (space) to interpolate between";
      return;
    }
    const [a, b] = selected.slice(-2);
    const data = await call("/api/interpolate", { a, b, frames: +$("frames").value, space: $("space").value });
    if (!data) return;
    $("strip").src = data.strip;
    $("interp-gif").src = data.gif;
    $("strip-link").href = `${data.strip}?download=interpolation.png`;
    $("gif-link").href = `${data.gif}?download=interpolation.gif`;
    $("interp-out").hidden = false;
    $("interp-out").dataset.frames = data.frames;
  }

  // --- directions ---
  function renderDirections() {
    const list = $("directions");
    list.replaceChildren();
    for (const d of directions) {
      const slider = el("input", { type: "range", min: -3, max: 3, step: 0.1, value: amounts[d.name] || 0, className: "amount" });
      const out = el("output", { textContent: (+slider.value).toFixed(1) });
      slider.addEventListener("input", () => {
        amounts[d.name] = +slider.value;
        out.textContent = (+slider.value).toFixed(1);
        deriveSoon();
      });
      const del = button("×", `delete ${d.name}`, async () => {
        const data = await call("/api/directions/delete", { name: d.name });
        if (data) { directions = data.directions; delete amounts[d.name]; renderDirections(); }
      });
      list.append(el("div", { className: "direction", title: d.source, dataset: { name: d.name } },
        el("span", { className: "dname", textContent: d.name }), slider, out,
        el("input", { type: "number", step: 0.5, value: 0, title: "weight in a combination", className: "weight" }), del));
    }
  }

  async function makeDirection() {
    const name = $("dir-name").value.trim();
    if (!name) { toast.textContent = "name the attribute first"; $("dir-name").focus(); return; }
    const pick = (k) => [...marks].filter(([, v]) => v === k).map(([id]) => id);
    const data = await call("/api/directions/mark", { name, with: pick("with"), without: pick("without") });
    if (!data) return;
    directions = data.directions;
    [...marks.keys()].forEach((id) => toggleMark(id, marks.get(id)));
    renderDirections();
    say(`direction ${name} saved beside the run`);
  }

  async function combine() {
    const parts = [...document.querySelectorAll("#directions .direction")]
      .map((row) => [row.dataset.name, +row.querySelector(".weight").value]).filter(([, w]) => w);
    const name = $("combo-name").value.trim();
    if (!name || !parts.length) { toast.textContent = "give weights beside the directions and a name for the sum"; return; }
    const data = await call("/api/directions/combine", { name, parts });
    if (data) { directions = data.directions; renderDirections(); }
  }

  function importer(input, url, done) {
    input.addEventListener("change", async () => {
      const file = input.files[0];
      input.value = "";
      if (!file) return;
      const data = await call(url, null, { type: "application/json", body: file });
      if (data) { done(data); say(`imported ${data.imported.join(", ")}`); }
    });
  }

  // --- feature maps ---
  async function showMaps() {
    if (!current) return;
    const level = +$("map-level").value;
    const data = await call("/api/maps", { id: current.id, level, order: $("map-order").value });
    if (!data) return;
    maps = { id: current.id, level, layout: data.layout };
    $("sheet").src = data.sheet;
    $("maps-out").hidden = false;
    $("cell-out").textContent = `${data.shape[0]} channels of ${data.shape[1]}×${data.shape[2]}: click a cell`;
  }

  // The sheet's pixel under the mouse -> (channel, cell x, cell y), through the layout map_tiles gave.
  function sheetCell(e) {
    const s = $("sheet");
    const L = maps.layout;
    const px = (e.offsetX * s.naturalWidth) / s.clientWidth - L.gap;
    const py = (e.offsetY * s.naturalHeight) / s.clientHeight - L.gap;
    const col = Math.floor(px / (L.tile_width + L.gap));
    const row = Math.floor(py / (L.tile_height + L.gap));
    const ix = px - col * (L.tile_width + L.gap);
    const iy = py - row * (L.tile_height + L.gap);
    const k = row * L.columns + col;
    if (col < 0 || col >= L.columns || ix >= L.tile_width || iy >= L.tile_height || k >= L.channels.length) return null;
    return { channel: L.channels[k], x: Math.floor(ix / L.cell), y: Math.floor(iy / L.cell) };
  }

  function addChannel(c, level) {
    $("edit-level").value = level;
    const have = parseChannels();
    if (!have.includes(c)) $("edit-channels").value = [...have, c].join(", ");
  }

  async function cellClick(e) {
    if (!maps) return;
    const hit = sheetCell(e);
    if (!hit) return;
    if (e.shiftKey) { addChannel(hit.channel, maps.level); return; }
    const data = await call("/api/cell", { id: maps.id, level: maps.level, x: hit.x, y: hit.y, n: 10 });
    if (!data) return;
    const out = $("cell-out");
    out.replaceChildren(`cell (${data.x}, ${data.y}), most active: `);
    for (const [c, v] of data.channels) {
      out.append(button(`${c} (${v >= 0 ? "+" : ""}${v.toFixed(2)})`, "add to the edit's channels",
        () => addChannel(c, maps.level), `chan ${v >= 0 ? "pos" : "neg"}`));
    }
    const lv = state.levels.find((l) => l.level === maps.level);
    const mark = $("cell-mark");
    Object.assign(mark.style, { left: `${(data.x / lv.width) * 100}%`, top: `${(data.y / lv.height) * 100}%`,
      width: `${100 / lv.width}%`, height: `${100 / lv.height}%` });
    mark.hidden = false;
  }

  // --- local edits ---
  function parseChannels() {
    return $("edit-channels").value.split(/[\s,]+/).filter(Boolean).map(Number).filter(Number.isInteger);
  }

  function editForm(name) {
    const e = { level: +$("edit-level").value, channels: parseChannels(), region, multiplier: +$("edit-mult").value };
    if (name) e.name = name;
    return e;
  }

  function applyEdit() {
    if (!base) return Promise.resolve();
    panelEdits = [...panelEdits, editForm()];
    return derive();
  }

  async function findChannels() {
    const ids = selected.length ? selected : base ? [base.id] : [];
    if (!ids.length) return;
    const data = await call("/api/find-channels", { ids, level: +$("edit-level").value, region, n: 8 });
    if (data) {
      $("edit-channels").value = data.channels.join(", ");
      say(`channels most active in the region over ${ids.length} image${ids.length > 1 ? "s" : ""}: ${data.channels.join(", ")}`);
    }
  }

  async function animate() {
    if (!base) return;
    const edit = editForm();
    const data = await call("/api/animate", { ...movedBody(), edit, frames: +$("anim-frames").value, k: edit.multiplier });
    if (!data) return;
    const a = $("anim-link");
    a.href = `${data.gif}?download=edit.gif`;
    a.hidden = false;
    a.dataset.frames = data.frames;
    $("anim").src = data.gif;
    $("anim").hidden = false;
  }

  function renderEdits() {
    const list = $("edits");
    list.replaceChildren();
    for (const e of savedEdits) {
      const use = button("apply", "apply to the current image", () => {
        $("edit-level").value = e.level;
        $("edit-channels").value = e.channels.join(", ");
        $("edit-mult").value = e.multiplier;
        setRegion(e.region);
        applyEdit();
      });
      const del = button("×", `delete ${e.name}`, async () => {
        const data = await call("/api/edits/delete", { name: e.name });
        if (data) { savedEdits = data.edits; renderEdits(); }
      });
      list.append(el("div", { className: "saved-edit", dataset: { name: e.name } },
        el("span", { textContent: `${e.name}: level ${e.level}, channels ${e.channels.join(", ")}, × ${e.multiplier}` }), use, del));
    }
  }

  async function saveEdit() {
    const name = $("edit-name").value.trim();
    if (!name) { toast.textContent = "name the edit to save it"; $("edit-name").focus(); return; }
    const data = await call("/api/edits/save", { edit: editForm(name) });
    if (data) { savedEdits = data.edits; renderEdits(); }
  }

  // --- a PNG dropped on the page: its latent comes back as an image ---
  document.addEventListener("dragover", (e) => {
    if ([...e.dataTransfer.types].includes("Files")) { e.preventDefault(); document.body.classList.add("dropping"); }
  });
  document.addEventListener("dragleave", () => document.body.classList.remove("dropping"));
  document.addEventListener("drop", async (e) => {
    if (!e.dataTransfer.files.length) return;
    e.preventDefault();
    document.body.classList.remove("dropping");
    for (const file of e.dataTransfer.files) {
      const data = await call("/api/drop", null, { type: "image/png", body: file });
      if (data) setCursor(addTile(data.image));
    }
  });

  // --- keys and clicks ---
  const actions = {
    g: generate, i: interpolate, e: exportCurrent, d: makeDirection, m: showMaps, f: findChannels,
    x: applyEdit, a: animate, k: keep, r: () => resetPanel(false),
    w: () => base && toggleMark(base.id, "with"), o: () => base && toggleMark(base.id, "without"),
    " ": () => base && toggleSelect(base.id),
  };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target.closest("input, select, textarea")) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (keys.open && e.key !== "?") return;
    const cols = columns();
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols };
    if (e.key in moves) setCursor(cursor < 0 ? 0 : cursor + moves[e.key]);
    else if (e.key === "?") keys.open ? keys.close() : keys.showModal();
    else if (e.key in actions) actions[e.key]();
    else return;
    e.preventDefault();
  });

  gallery.addEventListener("click", (e) => {
    const t = e.target.closest(".tile");
    if (!t) return;
    const i = images.findIndex((im) => im.id === +t.dataset.id);
    setCursor(i);
    if (e.shiftKey || e.ctrlKey || e.metaKey) toggleSelect(images[i].id);
  });
  gallery.addEventListener("error", (e) => {
    if (e.target.tagName === "IMG") e.target.closest(".tile").classList.add("broken");
  }, true);

  $("generate-form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("psi").addEventListener("input", () => { $("psi-value").textContent = (+$("psi").value).toFixed(2); });
  $("help-button").addEventListener("click", () => keys.showModal());
  $("keep").addEventListener("click", keep);
  $("interpolate").addEventListener("click", interpolate);
  $("make-dir").addEventListener("click", makeDirection);
  $("combine").addEventListener("click", combine);
  $("show-maps").addEventListener("click", showMaps);
  $("sheet").addEventListener("click", cellClick);
  $("find").addEventListener("click", findChannels);
  $("apply-edit").addEventListener("click", applyEdit);
  $("animate").addEventListener("click", animate);
  $("save-edit").addEventListener("click", saveEdit);
  importer($("dir-import"), "/api/directions/import", (d) => { directions = d.directions; renderDirections(); });
  importer($("edit-import"), "/api/edits/import", (d) => { savedEdits = d.edits; renderEdits(); });
  renderDirections();
  renderEdits();

  // lets a test wait until every request is answered, and read what the page holds
  window.curateExplore = {
    idle, setRegion,
    state: () => ({ images: images.map((im) => im.id), selected, cursor, base: base && base.id,
      current: current && current.id, region, directions: directions.map((d) => d.name) }),
  };
})();
