// Shows the edge's X-Cache verdict for this page by asking for it again.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const target = document.getElementById("x-cache");
  try {
    const response = await fetch(window.location.href, { method: "HEAD" });
    target.textContent = response.headers.get("x-cache") ?? "(no X-Cache header)";
  } catch (error) {
    target.textContent = `request failed: ${error}`;
  }
});
