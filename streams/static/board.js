// What the wallboard (/) and the agents board (/agents) share; served at /board.js, loaded by
// each page before its own scripts.
"use strict";

// A new element with an optional class and text.
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The JSON document at path (relative to the page), never from a cache; an HTTP error throws.
async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
}
