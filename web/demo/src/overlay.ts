// Boxes over the image: an SVG whose viewBox is the image's own pixel size, laid exactly over the <img>, so
// boxes stay aligned whatever size the image is shown at. One colour per span; hovering a box highlights its
// text in the list and the reverse. Labels are SVG text nodes (text, never markup).

import type { Span } from "varco-web";

export type Region = [number, number, number, number];

const SVG = "http://www.w3.org/2000/svg";
const svg = () => document.getElementById("overlay") as unknown as SVGSVGElement;
let size: [number, number] = [1, 1];

export function setImageSize(width: number, height: number) {
  size = [width, height];
  svg().setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg().replaceChildren();
  fitLabels();
}

/** Labels stay 13 CSS pixels high whatever the image's scale on screen (call when it changes). */
export function fitLabels() {
  const shown = svg().getBoundingClientRect().width;
  if (shown > 0) svg().style.setProperty("--unit", String(size[0] / shown));
}

/** Colour of the i-th span: golden-angle hues, distinct for neighbours. */
export const colour = (i: number) => `hsl(${Math.round((i * 137.508) % 360)} 85% 45%)`;

function rect(b: Region, cls: string): SVGRectElement {
  const [w, h] = size;
  const r = document.createElementNS(SVG, "rect");
  r.setAttribute("x", String(b[0] * w));
  r.setAttribute("y", String(b[1] * h));
  r.setAttribute("width", String(Math.max(0, (b[2] - b[0]) * w)));
  r.setAttribute("height", String(Math.max(0, (b[3] - b[1]) * h)));
  r.setAttribute("class", cls);
  return r;
}

/** The spans' boxes on the image and the spans as a list (`list`), linked by hover. */
export function renderSpans(spans: Span[], list: HTMLElement) {
  const s = svg();
  s.querySelectorAll("g.span").forEach((g) => g.remove());
  list.replaceChildren();
  spans.forEach((span, i) => {
    const c = colour(i);
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "span");
    g.dataset.span = String(i);
    g.style.setProperty("--c", c);
    for (const b of span.boxes) {
      g.append(rect([b.x1, b.y1, b.x2, b.y2], "box"));
      const label = document.createElementNS(SVG, "text");
      // above the box's top edge (inside it when the box touches the image's top); sized by CSS
      label.setAttribute("x", String(b.x1 * size[0]));
      label.setAttribute("y", String(b.y1 * size[1]));
      if (b.y1 < 0.05) label.setAttribute("class", "inside");
      label.textContent = span.text;
      g.append(label);
    }
    s.append(g);
    const li = document.createElement("li");
    li.dataset.span = String(i);
    li.style.setProperty("--c", c);
    li.textContent = span.text || "(no text)";
    li.title = span.boxes.map((b) => `${b.x1}, ${b.y1}, ${b.x2}, ${b.y2}`).join(" · ");
    list.append(li);
    const hot = (on: boolean) => { g.classList.toggle("hot", on); li.classList.toggle("hot", on); };
    for (const el of [g, li]) {
      el.addEventListener("mouseenter", () => hot(true));
      el.addEventListener("mouseleave", () => hot(false));
    }
  });
}

/** The region drawn for a referring question (dashed), or none. */
export function drawRegion(r: Region | undefined) {
  const s = svg();
  s.querySelector("rect.region")?.remove();
  if (r) s.append(rect(r, "region"));
}

/** OCR spans in reading order: lines top to bottom (boxes whose vertical centres are within half a line
 * height are one line), left to right within a line. Spans without boxes keep their place at the end. */
export function readingOrder(spans: Span[]): Span[] {
  const boxed = spans.filter((s) => s.boxes.length > 0);
  const rest = spans.filter((s) => s.boxes.length === 0);
  const heights = boxed.map((s) => s.boxes[0].y2 - s.boxes[0].y1).sort((a, b) => a - b);
  const tol = (heights[heights.length >> 1] ?? 0) / 2;
  const cy = (s: Span) => (s.boxes[0].y1 + s.boxes[0].y2) / 2;
  const byTop = [...boxed].sort((a, b) => cy(a) - cy(b));
  const lines: Span[][] = [];
  for (const s of byTop) {
    const line = lines[lines.length - 1];
    if (line && Math.abs(cy(s) - cy(line[0])) <= tol) line.push(s);
    else lines.push([s]);
  }
  return [...lines.flatMap((l) => l.sort((a, b) => a.boxes[0].x1 - b.boxes[0].x1)), ...rest];
}
