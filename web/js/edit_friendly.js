// Frontend helpers for the Edit-Friendly DDPM nodes.
//
// 1. The EF_NOISE_MAPS socket and its links get their own colour on the canvas (and in the Vue node
//    view), and keep it when the user switches colour palettes.
// 2. The Edit-Friendly Sampler shows how many steps the inversion that feeds it has, and limits its
//    `skip` widget to fewer than those steps, so a too-large skip is caught before queueing.
// 3. A new inversion node's seed starts "fixed", not "randomize": a seed changed after every queue
//    would run the whole inversion again each time and change every edit made from it.
// 4. Save Noise Maps shows the name of the file it wrote.
//
// Loaded by ComfyUI from WEB_DIRECTORY (./web), i.e. from /extensions/<pack folder>/js/.

import { app } from "../../../scripts/app.js";

export const NOISE_MAPS_TYPE = "EF_NOISE_MAPS";
export const NOISE_MAPS_COLOR = "#2EC4B6";
export const INVERSION_NODE = "EditFriendlyDDPMInversion";
export const SAMPLER_NODE = "EditFriendlySampler";
export const TRANSFORM_NODE = "EditFriendlyNoiseMapTransform";
export const SAVE_NODE = "EditFriendlySaveNoiseMaps";
// The read-only widget on Save Noise Maps that shows the file written last (not saved with the workflow).
export const SAVED_FILE_WIDGET = "saved_file";

// The skip widget's own limit, restored when no inversion with a known step count is connected, is
// read from the sampler's node definition (its skip input's max); this stands in when the definition
// gives none.
const SKIP_FALLBACK_MAX = 999;
// Longest chain of transforms and reroutes followed back to an inversion.
const MAX_HOPS = 64;

// ---------------------------------------------------------------------------------------------
// Socket and link colour

// A palette load first blanks the colour of every known data type ("") and then applies the
// palette's own colours, so a plain assignment would be lost on every palette change. The entry is
// therefore an accessor: a palette that names a colour for EF_NOISE_MAPS wins, a blank falls back
// to ours.
function pinTypeColour(table, type, colour) {
  if (!table || typeof table !== "object") return false;
  const existing = Object.getOwnPropertyDescriptor(table, type);
  if (existing && existing.get && existing.get.efPinned) return true;
  let paletteColour = existing && !existing.get ? existing.value || "" : "";
  const get = () => paletteColour || colour;
  get.efPinned = true;
  Object.defineProperty(table, type, {
    configurable: true,
    enumerable: true,
    get,
    set(value) {
      paletteColour = typeof value === "string" ? value : "";
    },
  });
  return true;
}

// The Vue node view colours a slot with var(--color-datatype-<TYPE>); palette loads set or remove
// that variable inline on <body>, which overrides this rule only when the palette names a colour.
// The node preview beside the search box draws slot dots with a class named after the type.
function addSlotColourRules(type, colour) {
  const id = "edit-friendly-ddpm-socket-colours";
  if (document.getElementById(id)) return;
  const style = document.createElement("style");
  style.id = id;
  style.textContent = [
    `:root, body { --color-datatype-${type}: ${colour}; }`,
    `._sb_dot.${type} { background-color: var(--color-datatype-${type}, ${colour}); }`,
  ].join("\n");
  document.head.appendChild(style);
}

function applySocketColour() {
  const LGraphCanvas = window.LGraphCanvas ?? window.comfyAPI?.litegraph?.LGraphCanvas;
  pinTypeColour(LGraphCanvas?.link_type_colors, NOISE_MAPS_TYPE, NOISE_MAPS_COLOR);
  pinTypeColour(app.canvas?.default_connection_color_byType, NOISE_MAPS_TYPE, NOISE_MAPS_COLOR);
  addSlotColourRules(NOISE_MAPS_TYPE, NOISE_MAPS_COLOR);
  app.canvas?.setDirty?.(true, true);
}

// ---------------------------------------------------------------------------------------------
// Steps of the connected inversion

function widget(node, name) {
  return node?.widgets?.find((w) => w.name === name) ?? null;
}

function inputIndex(node, name) {
  return node?.inputs?.findIndex((input) => input.name === name) ?? -1;
}

function upstreamNode(node, slot) {
  if (slot < 0 || node?.inputs?.[slot]?.link == null) return null;
  try {
    return node.getInputNode(slot) ?? null;
  } catch {
    return null;
  }
}

// The step count of the inversion whose maps reach `node`'s noise_maps input, following transforms
// and reroute nodes; null when nothing (or nothing readable) is connected.
export function connectedInversionSteps(node) {
  let current = upstreamNode(node, inputIndex(node, "noise_maps"));
  for (let hop = 0; current && hop < MAX_HOPS; hop++) {
    const type = current.comfyClass ?? current.type;
    if (type === INVERSION_NODE) {
      // A steps value that comes in through a link is only known when the prompt is built.
      const stepsInput = current.inputs?.[inputIndex(current, "steps")];
      if (stepsInput?.link != null) return null;
      const steps = Number(widget(current, "steps")?.value);
      return Number.isInteger(steps) && steps > 0 ? steps : null;
    }
    if (type === TRANSFORM_NODE) current = upstreamNode(current, inputIndex(current, "noise_maps"));
    else if (type === "Reroute") current = upstreamNode(current, 0);
    else return null;
  }
  return null;
}

// The skip input's max in a node definition as /object_info gives it (["INT", { max, ... }]), or the
// fallback when it has none.
export function skipMaxFromNodeDef(nodeData) {
  const spec = nodeData?.input?.required?.skip ?? nodeData?.input?.optional?.skip;
  const max = Number(Array.isArray(spec) ? spec[1]?.max : undefined);
  return Number.isInteger(max) && max >= 0 ? max : SKIP_FALLBACK_MAX;
}

// Shows the connected inversion's steps on the sampler's skip widget and caps the widget below
// them. Returns true when anything changed.
export function updateSkipLimit(node) {
  const skip = widget(node, "skip");
  if (!skip) return false;
  const steps = connectedInversionSteps(node);
  const state = steps == null ? null : `${steps}:${skip.value >= steps}`;
  if (node.efSkipState === state) return false;
  node.efSkipState = state;

  skip.options = skip.options ?? {};
  if (!("efOriginalLabel" in node)) node.efOriginalLabel = skip.label;
  if (steps == null) {
    skip.options.max = node.efSkipDefaultMax ?? SKIP_FALLBACK_MAX;
    skip.label = node.efOriginalLabel;
  } else {
    skip.options.max = Math.max(0, steps - 1);
    skip.label = skip.value >= steps ? `skip (must be < ${steps}!)` : `skip (of ${steps} steps)`;
  }
  node.setDirtyCanvas?.(true, true);
  return true;
}

// The hints are a convenience: a failure is reported once and never breaks drawing or editing.
let warned = false;
function safeUpdateSkipLimit(node) {
  try {
    updateSkipLimit(node);
  } catch (error) {
    if (!warned) console.warn("[edit-friendly-ddpm] could not update the skip limit", error);
    warned = true;
  }
}

function updateAllSamplers(graph = app.graph, depth = 0) {
  const nodes = graph?._nodes ?? graph?.nodes ?? [];
  for (const node of nodes) {
    if ((node.comfyClass ?? node.type) === SAMPLER_NODE) safeUpdateSkipLimit(node);
    // Nodes inside subgraphs.
    if (node.subgraph && node.subgraph !== graph && depth < 8) updateAllSamplers(node.subgraph, depth + 1);
  }
}

function chainCallback(object, property, callback) {
  const original = object[property];
  object[property] = function (...args) {
    const result = original?.apply(this, args);
    callback.apply(this, args);
    return result;
  };
}

function scheduleUpdate() {
  // Links are settled only after the event that changed them; update on the next frame.
  requestAnimationFrame(() => updateAllSamplers());
}

app.registerExtension({
  name: "editFriendlyDDPM.socketColour",
  async setup() {
    applySocketColour();
  },
  async afterConfigureGraph() {
    // A palette loaded with a workflow may have replaced the tables' entries.
    applySocketColour();
  },
});

app.registerExtension({
  name: "editFriendlyDDPM.skipLimit",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const name = nodeData?.name;
    if (name !== INVERSION_NODE && name !== SAMPLER_NODE && name !== TRANSFORM_NODE) return;
    chainCallback(nodeType.prototype, "onConnectionsChange", scheduleUpdate);
    chainCallback(nodeType.prototype, "onRemoved", scheduleUpdate);
    if (name === SAMPLER_NODE) {
      nodeType.prototype.efSkipDefaultMax = skipMaxFromNodeDef(nodeData);
      // Catches changes no hook reports (e.g. the steps typed into the inversion) while the canvas draws.
      chainCallback(nodeType.prototype, "onDrawForeground", function () {
        safeUpdateSkipLimit(this);
      });
    }
  },
  async nodeCreated(node) {
    const type = node.comfyClass ?? node.type;
    if (type === INVERSION_NODE) {
      const steps = widget(node, "steps");
      if (steps) chainCallback(steps, "callback", scheduleUpdate);
    } else if (type === SAMPLER_NODE) {
      const skip = widget(node, "skip");
      if (skip) chainCallback(skip, "callback", () => safeUpdateSkipLimit(node));
      scheduleUpdate();
    }
  },
  async afterConfigureGraph() {
    updateAllSamplers();
  },
});

app.registerExtension({
  name: "editFriendlyDDPM.fixedSeed",
  async nodeCreated(node) {
    if ((node.comfyClass ?? node.type) !== INVERSION_NODE) return;
    // Runs before a loaded workflow's values are applied, so a saved choice still wins.
    const seed = widget(node, "seed");
    const control = seed?.linkedWidgets?.[0] ?? widget(node, "control_after_generate");
    if (control) control.value = "fixed";
  },
});

app.registerExtension({
  name: "editFriendlyDDPM.savedFileName",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== SAVE_NODE) return;
    chainCallback(nodeType.prototype, "onExecuted", function (message) {
      const path = message?.text?.[0];
      if (typeof path !== "string") return;
      let shown = widget(this, SAVED_FILE_WIDGET);
      if (!shown) {
        // Last, so the workflow's widget values keep their places; left out of saved workflows and prompts.
        shown = this.addWidget("text", SAVED_FILE_WIDGET, "", () => {}, { serialize: false });
        shown.serialize = false;
        shown.disabled = true;
      }
      shown.value = `output/${path}`;
      this.setDirtyCanvas?.(true, true);
    });
  },
});
