// x402-image-mcp dashboard: the spend chart (SVG drawn here), the filters and the image viewer.
// Everything from the ledger reaches the page escaped by the server; this script inserts only
// the server's own HTML fragments and numbers, and builds the chart with createElementNS.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function drawChart() {
  const figure = document.getElementById("spend-chart");
  const source = document.getElementById("spend-data");
  if (!figure || !source) return;
  const data = JSON.parse(source.textContent);
  const budget = Number(data.budget);
  const amounts = data.days.map((d) => Number(d.amount_usdc));
  const top = Math.max(budget, ...amounts) * 1.1 || 1;
  const width = 900, height = 260, left = 48, bottom = 28, right = 10, topPad = 10;
  const plotW = width - left - right, plotH = height - bottom - topPad;
  const y = (value) => topPad + plotH - (value / top) * plotH;
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "USDC counted per UTC day against the daily budget" });
  for (const tick of [0, top / 2, top]) {
    svg.append(svgElement("line", { class: "axis", x1: left, x2: width - right, y1: y(tick), y2: y(tick) }));
    svg.append(svgElement("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, tick.toFixed(2)));
  }
  const step = plotW / data.days.length;
  data.days.forEach((day, index) => {
    const amount = amounts[index];
    const barHeight = Math.max(amount > 0 ? 1 : 0, plotH - (y(amount) - topPad));
    const bar = svgElement("rect", {
      class: amount > budget ? "bar over" : "bar", x: left + index * step + step * 0.15, y: topPad + plotH - barHeight,
      width: step * 0.7, height: barHeight, "data-day": day.day, "data-usdc": day.amount_usdc });
    bar.append(svgElement("title", {}, `${day.day}: ${day.amount_usdc} USDC`));
    svg.append(bar);
    if (index % 5 === 0 || index === data.days.length - 1) {
      svg.append(svgElement("text", { x: left + index * step + step / 2, y: height - 8, "text-anchor": "middle" },
        day.day.slice(5)));
    }
  });
  svg.append(svgElement("line", { class: "budget", x1: left, x2: width - right, y1: y(budget), y2: y(budget) }));
  svg.append(svgElement("text", { x: width - right, y: y(budget) - 5, "text-anchor": "end" },
    `daily budget ${data.budget} USDC`));
  figure.append(svg);
}

function autoSubmitFilters() {
  const form = document.getElementById("filters");
  if (!form) return;
  for (const control of form.querySelectorAll("select, input")) {
    control.addEventListener("change", () => {
      // Empty fields stay out of the URL, so links stay short and readable.
      for (const field of form.querySelectorAll("select, input")) field.disabled = !field.value;
      form.submit();
    });
  }
}

function imageViewer() {
  const gallery = document.getElementById("gallery");
  const dialog = document.getElementById("viewer");
  if (!gallery || !dialog || typeof dialog.showModal !== "function") return;
  const content = dialog.querySelector(".content");
  dialog.querySelector(".close").addEventListener("click", () => dialog.close());
  gallery.addEventListener("click", async (event) => {
    const link = event.target.closest("a.open");
    if (!link) return;
    event.preventDefault();
    const response = await fetch(`${link.getAttribute("href")}?fragment=1`, { credentials: "same-origin" });
    if (!response.ok) {
      content.textContent = await response.text();
    } else {
      // The server's own fragment: every ledger value in it is already HTML-escaped (pages.py).
      content.innerHTML = await response.text();
    }
    dialog.showModal();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  drawChart();
  autoSubmitFilters();
  imageViewer();
});
