// The agent console's page: plain browser JavaScript, no build step, no library.
// It keeps every conversation the simulator's stream (events, SSE) sends, renders the
// lists and the chat picked, and sends the agent's actions to api/, one at a time and in
// order (so a typing indicator can never overtake the message it belongs to).
"use strict";

(() => {
  const TYPING_IDLE_MS = 3000; // the agent's typing indicator goes off after this pause
  const RETRY_MS = 3000; // a new stream after the simulator refused one
  const $ = (id) => document.getElementById(id);
  const conversations = new Map(); // "backend/id" -> conversation
  const titles = {}; // backend key -> title
  let selected = null; // "backend/id"
  let typingOn = false;
  let typingTimer = null;
  let chain = Promise.resolve();
  const drawn = {}; // what each part of the page shows now: redrawn only when it changes,
  // so that a click or a text selection survives the updates of other chats

  const keyOf = (c) => `${c.backend}/${c.id}`;
  const agentName = () => $("agent-name").value.trim();

  // ---------------------------------------------------------------- the live stream
  function connect() {
    const events = new EventSource("events");
    events.addEventListener("open", () => setConnection(true));
    events.addEventListener("error", () => {
      setConnection(false);
      // EventSource retries by itself after a dropped stream, but not after a refusal
      // (too many pages open, the simulator stopping): then start over a little later.
      if (events.readyState === EventSource.CLOSED) setTimeout(connect, RETRY_MS);
    });
    events.addEventListener("snapshot", (e) => {
      const data = JSON.parse(e.data);
      for (const b of data.backends) titles[b.key] = b.title;
      conversations.clear();
      for (const c of data.conversations) conversations.set(keyOf(c), c);
      render();
    });
    events.addEventListener("conversation", (e) => {
      const data = JSON.parse(e.data);
      const key = `${data.backend}/${data.id}`;
      if (data.conversation === null) conversations.delete(key);
      else conversations.set(key, data.conversation);
      render();
    });
  }

  function setConnection(on) {
    const el = $("connection");
    el.textContent = on ? "live" : "reconnecting…";
    el.className = "connection " + (on ? "on" : "off");
  }

  // ---------------------------------------------------------------- actions
  function act(action, body) {
    const c = conversations.get(selected);
    if (!c) return Promise.resolve();
    const url = `api/${encodeURIComponent(c.backend)}/${encodeURIComponent(c.id)}/${action}`;
    const run = async () => {
      const response = await fetch(url, {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify(body || {}),
      });
      const data = await response.json().catch(() => ({error: response.statusText}));
      if (!response.ok) throw new Error(data.error || response.statusText);
      conversations.set(keyOf(data.conversation), data.conversation);
      render();
    };
    const done = chain.then(run);
    chain = done.catch(() => {});
    done.then(() => showError(""), (err) => showError(err.message));
    return done;
  }

  function showError(text) { $("error").textContent = text; }

  function setTyping(active) {
    clearTimeout(typingTimer);
    typingTimer = null;
    if (typingOn === active) return;
    typingOn = active;
    act("typing", {active});
  }

  function onComposerInput() {
    const c = conversations.get(selected);
    if (!c || c.state !== "active") return;
    if ($("composer").value.trim() === "") { setTyping(false); return; }
    if (!typingOn) setTyping(true);
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => setTyping(false), TYPING_IDLE_MS);
  }

  function send() {
    const text = $("composer").value;
    if (!text.trim()) return;
    clearTimeout(typingTimer);
    typingTimer = null;
    typingOn = false; // saying it ends the typing indicator (the simulator sends it)
    $("composer").value = "";
    act("say", {text});
  }

  // ---------------------------------------------------------------- rendering
  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], {hour12: false});
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function summary(c) {
    if (c.state === "waiting") return `waiting since ${clock(c.since)}`;
    if (c.state === "active") return `with ${c.agent}`;
    return c.ended || "ended";
  }

  function renderList(state) {
    const list = $(state);
    const items = [...conversations.values()].filter((c) => c.state === state)
      .sort((a, b) => a.since - b.since);
    $(`${state}-count`).textContent = String(items.length);
    const signature = JSON.stringify([selected, items.map((c) => [
      keyOf(c), c.visitor, c.visitor_typing, summary(c), titles[c.backend]])]);
    if (drawn[state] === signature) return items.length;
    drawn[state] = signature;
    list.replaceChildren();
    if (items.length === 0) {
      list.append(el("li", "none", state === "waiting" ? "No chat is waiting." : "None."));
      return items.length;
    }
    for (const c of items) {
      const item = el("li", `${c.state}${keyOf(c) === selected ? " selected" : ""}`);
      item.dataset.key = keyOf(c);
      item.dataset.id = c.id;
      const who = el("div", "who", c.visitor || "visitor");
      who.append(el("span", "badge", titles[c.backend] || c.backend));
      if (c.visitor_typing) who.append(el("span", "dots", "typing…"));
      item.append(who, el("div", "meta", summary(c)));
      item.addEventListener("click", () => select(keyOf(c)));
      list.append(item);
    }
    return items.length;
  }

  function select(key) {
    if (key !== selected) {
      setTyping(false);
      selected = key;
      $("composer").value = "";
      showError("");
    }
    render();
  }

  function renderChat() {
    const c = conversations.get(selected);
    $("chat").classList.toggle("empty", !c);
    if (!c) return;
    $("chat").dataset.state = c.state;
    $("chat").dataset.key = keyOf(c);
    $("chat-title").textContent = c.visitor || "visitor";
    $("chat-title").append(el("span", "badge", titles[c.backend] || c.backend));
    const details = c.details.map(([label, value]) => `${label}: ${value}`);
    $("chat-meta").textContent = [summary(c), ...details].join(" · ");

    const waiting = c.state === "waiting", active = c.state === "active";
    $("accept").hidden = !waiting;
    $("accept").disabled = !agentName();
    $("accept").textContent = `Accept as ${agentName() || "…"}`;
    $("transfer-box").hidden = !active;
    $("end").hidden = !active;
    $("composer").disabled = !active;
    $("send").disabled = !active;

    const lines = $("lines");
    const signature = JSON.stringify([keyOf(c), c.lines]);
    if (drawn.lines !== signature) {
      drawn.lines = signature;
      const atBottom = lines.scrollHeight - lines.scrollTop - lines.clientHeight < 30;
      lines.replaceChildren(...c.lines.map((line) => {
        const item = el("li", line.side);
        item.append(el("span", "name", line.name || line.side), el("span", "text", line.text));
        return item;
      }));
      if (atBottom || drawn.linesKey !== keyOf(c)) lines.scrollTop = lines.scrollHeight;
      drawn.linesKey = keyOf(c);
    }
    $("ended-note").textContent = c.state === "ended" ? `Chat ended: ${c.ended}` : "";
    $("visitor-typing").textContent =
      c.visitor_typing ? `${c.visitor || "The visitor"} is typing…` : "";
    $("agent-typing").textContent =
      c.agent_typing ? `${c.visitor || "The visitor"} sees ${c.agent} typing.` : "";
    if (!active && typingOn) { typingOn = false; clearTimeout(typingTimer); }
  }

  function render() {
    const waiting = renderList("waiting");
    renderList("active");
    renderList("ended");
    $("waiting-count").classList.toggle("some", waiting > 0);
    document.title = waiting > 0 ? `(${waiting}) Agent console` : "Agent console";
    renderChat();
  }

  // ---------------------------------------------------------------- wiring
  document.addEventListener("DOMContentLoaded", () => {
    const saved = localStorage.getItem("bridged.console.agent");
    if (saved) $("agent-name").value = saved;
    $("agent-name").addEventListener("input", () => {
      localStorage.setItem("bridged.console.agent", agentName());
      renderChat();
    });
    $("accept").addEventListener("click", () => act("accept", {agent: agentName()}));
    $("transfer").addEventListener("click", () => {
      const to = $("transfer-name").value.trim();
      act("transfer", {agent: to}).then(() => {
        $("agent-name").value = to; // you now play the agent it went to
        $("transfer-name").value = "";
        renderChat();
      }, () => {});
    });
    $("end").addEventListener("click", () => { setTyping(false); act("end"); });
    $("composer").addEventListener("input", onComposerInput);
    $("composer").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
    });
    $("composer-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
    connect();
  });
})();
