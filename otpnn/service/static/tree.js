// The supervision tree as GET /tree gives it, drawn as a tree: the service's root, the jobs
// supervisor, every job (the watched one expanded down to its workers). Each node shows its
// kind, pid, state, restart count and last exit reason; a node whose restart count or pid
// changed flashes for a few seconds and keeps a ↻ badge.

import { clear, el } from "./svg.js";

const W = 168; // node box
const H = 64;
const GAP_X = 14;
const GAP_Y = 34;
const FLASH_MS = 4000;

const seen = new Map(); // node path -> {pid, restarts}
const flashUntil = new Map(); // node path -> time

export function stateOf(node) {
  return node.status === "undefined" ? "dead" : node.status; // running | restarting | dead
}

// The rows drawn: the root and jobs, the watched job expanded, the other jobs folded.
function shape(root, jobId) {
  const fold = (node, path) => {
    const children = node.children || [];
    const isJob = String(node.id).startsWith("job-");
    const open = !isJob || node.id === `job-${jobId}`;
    return {
      ...node,
      path,
      folded: isJob && !open,
      count: children.length,
      children: open ? children.map((c) => fold(c, `${path}/${c.id}`)) : [],
    };
  };
  return fold(root, String(root.id));
}

// Leaves side by side, each parent centred over its children.
function layout(node, depth, next) {
  node.y = depth * (H + GAP_Y) + 8;
  if (node.children.length === 0) {
    node.x = next.x;
    next.x += W + GAP_X;
  } else {
    node.children.forEach((c) => layout(c, depth + 1, next));
    const first = node.children[0];
    const last = node.children[node.children.length - 1];
    node.x = (first.x + last.x) / 2;
  }
}

function depthOf(node) {
  return 1 + Math.max(0, ...node.children.map(depthOf));
}

function truncate(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

export function drawTree(svg, tree, jobId, now = Date.now()) {
  const root = shape(tree, jobId);
  const next = { x: 8 };
  layout(root, 0, next);
  const width = Math.max(next.x, W + 16);
  const height = depthOf(root) * (H + GAP_Y);
  clear(svg, width, height);
  const edges = el("g", { class: "edges" });
  const nodes = el("g", { class: "nodes" });
  svg.append(edges, nodes);
  const servicePid = tree.pid;

  const visit = (node) => {
    for (const child of node.children) {
      edges.append(
        el("path", {
          d: `M${node.x + W / 2},${node.y + H} C${node.x + W / 2},${node.y + H + GAP_Y / 2} ${child.x + W / 2},${child.y - GAP_Y / 2} ${child.x + W / 2},${child.y}`,
        }),
      );
      visit(child);
    }
    const state = stateOf(node);
    const restarts = node.restarts || 0;
    const before = seen.get(node.path);
    if (before && (restarts > before.restarts || (node.pid && before.pid && node.pid !== before.pid))) {
      flashUntil.set(node.path, now + FLASH_MS);
    }
    seen.set(node.path, { pid: node.pid, restarts });
    const flashing = (flashUntil.get(node.path) || 0) > now;
    const classes = ["node", `state-${state}`, `type-${node.type || "worker"}`];
    if (restarts > 0) classes.push("has-restarts");
    if (flashing) classes.push("restarted");
    const pid = node.pid ? `pid ${node.pid}` : `in pid ${servicePid}`;
    const reason = node.last_reason || "";
    const g = el(
      "g",
      {
        class: classes.join(" "),
        transform: `translate(${node.x},${node.y})`,
        "data-id": node.id,
        "data-state": state,
        "data-restarts": restarts,
        "data-pid": node.pid || "",
      },
      el("title", {}, `${node.id}\n${node.kind || ""} ${pid}\n${state}, ${restarts} restart(s)${reason ? `\nlast exit: ${reason}` : ""}`),
      el("rect", { width: W, height: H, rx: 6 }),
      el("text", { x: 8, y: 16, class: "name" }, truncate(String(node.id), 20)),
      el("text", { x: 8, y: 31 }, `${node.kind || "?"} · ${pid}`),
      el("text", { x: 8, y: 45 }, node.folded ? `${state} · ${node.count} children` : state),
      el("text", { x: 8, y: 58, class: "reason" }, reason ? truncate(`exit: ${reason}`, 27) : ""),
    );
    if (restarts > 0) {
      g.append(el("text", { x: W - 8, y: 16, class: "badge", "text-anchor": "end" }, `↻ ${restarts}`));
    }
    nodes.append(g);
  };
  visit(root);
  return flashUntil.size && [...flashUntil.values()].some((t) => t > now);
}

// The watched job's node, if its tree is running.
export function findJob(tree, jobId) {
  const jobs = (tree.children || []).find((c) => c.id === "jobs");
  return ((jobs && jobs.children) || []).find((c) => c.id === `job-${jobId}`) || null;
}
