// The submit form, built from the service's own OpenAPI schema of POST /jobs (JobRequest), so
// it always has the same fields and defaults; the service validates, and its messages are
// shown as it words them.

const MAIN = ["dataset", "synthetic_train", "epochs", "batch_size", "workers", "backend", "hidden", "lr", "seed", "faults"];

function kindOf(prop) {
  const options = prop.anyOf ? prop.anyOf.filter((p) => p.type !== "null") : [prop];
  const p = options[0] || {};
  if (p.enum) return { kind: "enum", values: p.enum };
  if (p.type === "array") return { kind: p.items && p.items.type === "integer" ? "ints" : "lines" };
  if (p.type === "integer" || p.type === "number") return { kind: "number" };
  if (p.type === "boolean") return { kind: "bool" };
  return { kind: "text" };
}

export function buildForm(schema, mainBox, moreBox) {
  const props = schema.properties;
  const fields = [];
  for (const name of [...MAIN.filter((n) => n in props), ...Object.keys(props).filter((n) => !MAIN.includes(n))]) {
    const prop = props[name];
    const { kind, values } = kindOf(prop);
    const label = document.createElement("label");
    label.className = "field";
    label.title = prop.description || "";
    const caption = document.createElement("span");
    caption.textContent = name;
    let input;
    if (kind === "enum") {
      input = document.createElement("select");
      for (const v of values) input.append(new Option(v, v, false, v === prop.default));
    } else if (kind === "lines") {
      input = document.createElement("textarea");
      input.rows = 2;
      input.placeholder = "one per line, e.g. kill:worker=0@step=100";
      input.value = (prop.default || []).join("\n");
    } else if (kind === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = prop.default === true;
    } else {
      input = document.createElement("input");
      input.type = kind === "number" ? "number" : "text";
      if (kind === "number") input.step = "any";
      const dflt = prop.default;
      if (kind === "ints") input.value = (dflt || []).join(",");
      else if (dflt !== undefined && dflt !== null) input.value = String(dflt);
      else input.placeholder = "default";
    }
    input.name = name;
    input.id = `field-${name}`;
    const problem = document.createElement("span");
    problem.className = "problem";
    problem.id = `problem-${name}`;
    label.append(caption, input, problem);
    (MAIN.includes(name) ? mainBox : moreBox).append(label);
    fields.push({ name, kind, input, problem });
  }
  return fields;
}

// The request body: every field that has a value, as the JSON type the schema wants (a
// value that does not parse is sent as typed, so the service names the problem).
export function readForm(fields) {
  const body = {};
  for (const { name, kind, input } of fields) {
    if (kind === "bool") {
      body[name] = input.checked;
      continue;
    }
    const raw = input.value.trim();
    if (raw === "") continue;
    if (kind === "number") body[name] = Number.isNaN(Number(raw)) ? raw : Number(raw);
    else if (kind === "ints") body[name] = raw.split(",").map((s) => (Number.isNaN(Number(s.trim())) ? s.trim() : Number(s.trim())));
    else if (kind === "lines") body[name] = raw.split("\n").map((s) => s.trim()).filter(Boolean);
    else body[name] = raw;
  }
  return body;
}

export function showProblems(fields, detail) {
  for (const f of fields) {
    f.problem.textContent = "";
    f.input.removeAttribute("aria-invalid");
  }
  for (const { field, problem } of detail || []) {
    const f = fields.find((x) => x.name === String(field).split(".")[0]);
    if (f) {
      f.problem.textContent = problem;
      f.input.setAttribute("aria-invalid", "true");
    }
  }
}
