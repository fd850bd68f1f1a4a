// The web client: one websocket to /ws, speaking protocol v1 (docs/protocol.md). No build step.

const $ = (id) => document.getElementById(id);
const MAX_SIDE = 2048; // larger photos are scaled down in the browser before upload
const MAX_UPLOAD_BYTES = 8 * 1024 * 1024;
const RECENT_KEY = "assistant.recent";
const LAST_KEY = "assistant.conversation";
const TOKEN_KEY = "assistant.token";
const SPEAKER_KEY = "assistant.speaker"; // "on": replies are read aloud
const ERROR_WORDS = {
  bad_request: "That was not understood",
  unauthorized: "Not allowed",
  too_large: "Too large",
  unsupported: "Not supported",
  unavailable: "Not available",
  not_found: "Not found",
  rate_limited: "Too many requests at once; wait a moment",
  internal: "Something went wrong on the server",
};

const state = {
  ws: null,
  conversationId: new URLSearchParams(location.search).get("c") || localStorage.getItem(LAST_KEY),
  capabilities: {},
  token: localStorage.getItem(TOKEN_KEY), // sent in session.start: browsers cannot set Authorization on a websocket
  attachments: [], // {mime, base64, url}
  pendingUser: [], // user bubbles sent, waiting for turn.created
  turns: new Map(), // turn_id -> user bubble
  replies: new Map(), // response_id -> assistant bubble
  jobs: new Map(), // job_id -> image card
  streaming: null, // response_id of the reply streaming now
  lastSeq: null, // seq of the last conversation event seen, for a replay after reconnecting
  mic: null,
  hearing: false,
  speakerOn: localStorage.getItem(SPEAKER_KEY) === "on", // the user's choice, kept across visits
  speechAvailable: true, // false when the server has no speech synthesizer (session.started says so)
  sessionAudio: false, // whether the current session asked for spoken replies
  startAskedAudio: false, // whether the last session.start sent asked for them
  sessionReady: false, // session.started came for the last session.start
  voiced: new Set(), // response_ids of this session's spoken replies whose response.audio.done has not come
  keepError: false, // an error shown while starting a new session, which that session must not clear
  retry: 0,
  counter: 0,
};

// ---------------------------------------------------------------- connection

function connect() {
  setStatus("connecting", "Connecting…");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => {
    state.retry = 0;
    startSession(state.conversationId, state.lastSeq);
  };
  ws.onmessage = (message) => {
    if (typeof message.data === "string") handle(JSON.parse(message.data));
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.sessionReady = false;
    setStatus("disconnected", "Disconnected; reconnecting…");
    stopMic(false);
    endStreaming();
    setTimeout(connect, Math.min(10000, 500 * 2 ** state.retry++));
  };
}

function send(event) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    showError("Not connected to the server; try again in a moment.");
    return false;
  }
  state.ws.send(JSON.stringify(event));
  return true;
}

function startSession(conversationId, lastSeq = null, eventId = "start") {
  const event = { type: "session.start", event_id: eventId, sample_rate: 16000 };
  const timezone = Intl.DateTimeFormat().resolvedOptions().timeZone; // dates, times and reminders in the user's zone
  if (timezone) event.timezone = timezone;
  if (conversationId) event.conversation_id = conversationId;
  if (conversationId && lastSeq !== null) event.last_seq = lastSeq; // reconnecting: replay what was missed
  if (state.token) event.token = state.token;
  state.startAskedAudio = wantsAudio();
  if (state.startAskedAudio) event.output_modalities = ["text", "audio"];
  send(event);
}

// ---------------------------------------------------------------- server events

const ANSWERS = new Set(["session.started", "conversation.history", "conversation.search.results", "reminder.due", "error"]);

function handle(event) {
  if (!ANSWERS.has(event.type)) state.lastSeq = event.seq; // a conversation event: numbered without gaps
  switch (event.type) {
    case "session.started": return sessionStarted(event);
    case "conversation.history": return renderHistory(event.turns);
    case "turn.created": return turnCreated(event);
    case "transcript.delta": return showLiveTranscript(event.text);
    case "transcript.done": return transcriptDone(event);
    case "speech.started": // the user talks: stop reading the reply aloud at once (barge-in)
      state.hearing = true;
      $("mic").classList.add("hearing");
      return cutAudio();
    case "speech.stopped": state.hearing = false; $("mic").classList.remove("hearing"); return;
    case "response.created": return responseCreated(event);
    case "response.text.delta": return responseDelta(event);
    case "response.done": return responseDone(event);
    case "response.audio.delta": return audioDelta(event);
    case "response.audio.done": return audioDone(event);
    case "image.started": return imageStarted(event);
    case "image.progress": return imageProgress(event);
    case "image.done": return imageDone(event);
    case "reminder.due": return reminderDue(event);
    case "tool.call": return toolCall(event);
    case "tool.result": return toolResult(event);
    case "error": return serverError(event);
  }
}

function sessionStarted(event) {
  state.conversationId = event.conversation_id;
  state.capabilities = event.capabilities || {};
  localStorage.setItem(LAST_KEY, event.conversation_id);
  history.replaceState(null, "", `?c=${encodeURIComponent(event.conversation_id)}`);
  remember(event.conversation_id);
  $("conversation-id").textContent = event.conversation_id;
  const caps = Object.entries(state.capabilities).map(([role, id]) => `${role}: ${id || "none"}`);
  if (event.modalities && event.modalities.length) caps.push(`images read by: ${event.modalities.join(", ")}`);
  $("capabilities").textContent = caps.join(" · ");
  $("input").placeholder = state.capabilities.image_generator
    ? "Message, or paste an image. /imagine a prompt paints one."
    : "Message, or paste an image.";
  $("mic").disabled = !state.capabilities.asr;
  $("mic").title = state.capabilities.asr ? "Talk (the server notices when you stop)" : "No speech recognition on this server";
  state.sessionReady = true;
  if (!state.keepError) hideError(); // what went wrong before (disconnected, refused) is over now
  state.keepError = false;
  state.sessionAudio = (event.output_modalities || []).includes("audio");
  state.speechAvailable = Boolean(state.capabilities.speech_synthesizer) && Boolean(event.voices && event.voices.length);
  renderSpeaker();
  setStatus("connected", "Connected");
  $("token-form").hidden = true;
  if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
  if (event.replay && event.replay.complete) return restartIfIdle(); // reconnected or restarted: the missed events follow, the page stays
  clearMessages();
  state.lastSeq = event.seq;
  if (event.resumed) send({ type: "conversation.get", event_id: "history" });
  restartIfIdle();
}

function turnCreated(event) {
  const bubble = state.pendingUser.shift() || addMessage("user", { text: "…" }); // a spoken turn has no bubble yet
  bubble.dataset.turnId = event.turn_id;
  state.turns.set(event.turn_id, bubble);
}

function showLiveTranscript(text) {
  const live = $("live-transcript");
  live.hidden = !text;
  live.textContent = text ? `Hearing: ${text}` : "";
}

function transcriptDone(event) {
  showLiveTranscript("");
  let bubble = state.turns.get(event.turn_id);
  if (!bubble) {
    bubble = addMessage("user", {});
    state.turns.set(event.turn_id, bubble);
  }
  const text = bubble.querySelector(".text");
  if (text.textContent === "…") text.textContent = "";
  const transcript = document.createElement("span");
  transcript.className = "transcript";
  transcript.textContent = event.text || "(nothing was heard)";
  bubble.appendChild(transcript);
  if (event.text) retitle(event.text);
}

function responseCreated(event) {
  const bubble = addMessage("assistant", {});
  const asked = state.turns.get(event.turn_id);
  if (asked) afterTurn(asked).after(bubble); // right below its question, also when newer messages were sent meanwhile
  bubble.classList.add("streaming");
  bubble.dataset.responseId = event.response_id;
  bubble.dataset.replyTo = event.turn_id;
  state.replies.set(event.response_id, bubble);
  state.streaming = event.response_id;
  if (state.sessionAudio) state.voiced.add(event.response_id);
  updateStop();
}

function responseDelta(event) {
  const bubble = state.replies.get(event.response_id);
  if (bubble) {
    bubble.querySelector(".text").textContent += event.delta;
    scrollDown();
  }
}

function responseDone(event) {
  const bubble = state.replies.get(event.response_id);
  if (bubble) {
    bubble.classList.remove("streaming");
    bubble.dataset.status = event.status;
    bubble.querySelector(".text").textContent = event.text;
    if (event.finish_reason === "length") addNote(bubble, "Cut off at the token limit: ask it to go on for more.");
    if (event.status === "cancelled") addNote(bubble, "Stopped.");
    if (event.status === "failed") {
      bubble.classList.add("failed");
      addNote(bubble, `Failed: ${event.error ? event.error.message : "unknown error"}`);
    }
  }
  if (state.streaming === event.response_id) endStreaming();
  restartIfIdle();
}

function afterTurn(userBubble) {
  // The last message shown for the user's turn: its bubble, or the replies already drawn below it.
  let last = userBubble;
  while (last.nextElementSibling && last.nextElementSibling.dataset.replyTo === userBubble.dataset.turnId) last = last.nextElementSibling;
  return last;
}

function endStreaming() {
  state.streaming = null;
  updateStop();
}

function updateStop() {
  $("stop").hidden = !state.streaming && !player.active();
}

function imageStarted(event) {
  const card = addMessage("assistant", { text: `Painting “${event.prompt}” (${event.width}×${event.height}, ${event.steps} steps, seed ${event.seed})` });
  card.classList.add("image-job");
  card.dataset.jobId = event.job_id;
  const progress = document.createElement("progress");
  progress.max = event.steps;
  progress.value = 0;
  const preview = document.createElement("img");
  preview.alt = "preview";
  preview.hidden = true;
  const actions = document.createElement("div");
  actions.className = "job-actions";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.textContent = "Cancel";
  cancel.className = "cancel-image";
  cancel.onclick = () => send({ type: "image.cancel", job_id: event.job_id });
  actions.append(cancel);
  card.append(progress, preview, actions);
  state.jobs.set(event.job_id, card);
}

function imageProgress(event) {
  const card = state.jobs.get(event.job_id);
  if (!card) return;
  const progress = card.querySelector("progress");
  progress.max = event.total;
  progress.value = event.step;
  if (event.preview) {
    const preview = card.querySelector("img");
    preview.src = `data:image/png;base64,${event.preview}`;
    preview.hidden = false;
  }
}

function imageDone(event) {
  const card = state.jobs.get(event.job_id);
  if (!card) return;
  card.querySelector("progress")?.remove();
  card.querySelector(".job-actions")?.remove();
  card.dataset.status = event.status;
  const preview = card.querySelector("img");
  if (event.status === "completed") {
    preview.src = `data:${event.mime};base64,${event.data}`;
    preview.alt = "generated image";
    preview.className = "generated";
    preview.hidden = false;
  } else {
    preview.remove();
    addNote(card, event.status === "cancelled" ? "Cancelled." : `Failed: ${event.error ? event.error.message : "unknown error"}`);
  }
  state.jobs.delete(event.job_id);
  restartIfIdle();
}

function reminderDue(event) {
  // A reminder or timer of this user went off (in any of their conversations): a card with what, when and where.
  const card = document.createElement("div");
  card.className = "message reminder";
  card.setAttribute("role", "alert");
  card.dataset.reminderId = event.reminder_id;
  const title = document.createElement("strong");
  title.textContent = event.kind === "timer" ? "Timer" : "Reminder";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = event.text;
  const when = document.createElement("time");
  when.dateTime = event.due_at;
  const due = new Date(event.due_at);
  when.textContent = `${due.toLocaleString([], { timeZone: event.timezone, weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" })} (${event.timezone})`;
  const where = document.createElement("span");
  where.className = "note";
  if (!event.conversation_id || event.conversation_id === state.conversationId) {
    where.textContent = event.conversation_id ? "Set in this conversation" : "";
  } else {
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = "the conversation it was set in";
    link.onclick = (e) => { e.preventDefault(); switchTo(event.conversation_id); };
    where.append("Set in ", link);
  }
  card.append(title, text, when, where);
  $("messages").appendChild(card);
  scrollDown();
}

// ---------------------------------------------------------------- tool cards

function toolCard(bubble, callId, name, args) {
  // One card per tool call, above the reply's text: the tool, its arguments, then how it ended.
  let box = bubble.querySelector(".tools");
  if (!box) {
    box = document.createElement("div");
    box.className = "tools";
    bubble.insertBefore(box, bubble.querySelector(".text"));
  }
  let card = [...box.children].find((c) => c.dataset.callId === callId);
  if (card) return card; // replayed after a reconnect
  card = document.createElement("div");
  card.className = "tool-card";
  card.dataset.callId = callId;
  const title = document.createElement("div");
  title.className = "tool-title";
  title.textContent = name || "(unreadable tool call)";
  const status = document.createElement("span");
  status.className = "tool-status";
  status.textContent = "running…";
  title.append(status);
  const code = document.createElement("code");
  code.className = "tool-args";
  code.textContent = JSON.stringify(args);
  card.append(title, code);
  box.append(card);
  scrollDown();
  return card;
}

function toolCall(event) {
  const bubble = state.replies.get(event.response_id);
  if (!bubble) return;
  const card = toolCard(bubble, event.call_id, event.name, event.arguments);
  if (!event.needs_confirmation || card.dataset.status) return;
  card.classList.add("asking");
  card.querySelector(".tool-status").textContent = "needs your approval";
  const actions = document.createElement("div");
  actions.className = "tool-actions";
  for (const [label, approved] of [["Approve", true], ["Decline", false]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.className = approved ? "approve" : "decline";
    button.onclick = () => {
      send({ type: "tool.confirm", call_id: event.call_id, approved });
      actions.querySelectorAll("button").forEach((b) => (b.disabled = true));
    };
    actions.append(button);
  }
  card.append(actions);
}

function showToolResult(card, status, result, error) {
  card.classList.remove("asking");
  card.querySelector(".tool-actions")?.remove();
  card.dataset.status = status;
  card.classList.add(status === "ok" ? "ok" : "not-ok");
  card.querySelector(".tool-status").textContent = status === "ok" ? "done" : status;
  let out = card.querySelector(".tool-result");
  if (!out) {
    out = document.createElement("code");
    out.className = "tool-result";
    card.append(out);
  }
  out.textContent = status === "ok" ? (typeof result === "string" ? result : JSON.stringify(result)) : error || "";
}

function toolResult(event) {
  const bubble = state.replies.get(event.response_id);
  if (!bubble) return;
  const card = toolCard(bubble, event.call_id, event.name, {});
  showToolResult(card, event.status, event.result, event.error);
}

function serverError(event) {
  if (event.ref && (event.ref.startsWith("played-") || (event.ref.startsWith("cancel-") && event.code === "not_found"))) {
    return; // a report of audio played for a reply the server has moved past, or a stop that came after the end: nothing to tell
  }
  if ((event.ref === "start" || event.ref === "restart") && state.startAskedAudio && event.code === "unavailable") {
    state.speechAvailable = false; // the server cannot speak (no synthesizer): go on in text, with the switch disabled
    renderSpeaker();
    if (event.ref === "start") startSession(state.conversationId, state.lastSeq);
    else state.sessionReady = true; // the session in place goes on
    return;
  }
  if (event.ref === "restart" && event.code === "bad_request") {
    state.sessionReady = true; // something was still in progress: the switch applies when it ends
    return;
  }
  if (event.code === "unauthorized") {
    $("token-form").hidden = false;
    $("token-input").focus();
    showError(state.token ? "The access token was refused (wrong or revoked). Enter another." : "This server needs an access token.");
    return;
  }
  if (event.ref === "start" && event.code === "not_found") {
    state.conversationId = null; // a conversation this server does not know: start afresh
    startSession(null);
    showError("That conversation no longer exists here; started a new one.");
    state.keepError = true; // the new session's start must not hide this
    return;
  }
  const index = state.pendingUser.findIndex((bubble) => bubble.dataset.eventId === event.ref);
  if (index >= 0) {
    const [bubble] = state.pendingUser.splice(index, 1);
    bubble.classList.add("failed");
    addNote(bubble, "Not sent.");
  }
  showError(`${ERROR_WORDS[event.code] || "Error"}: ${event.message}`);
}

// ---------------------------------------------------------------- messages

function clearMessages() {
  $("messages").replaceChildren();
  state.pendingUser = [];
  state.turns.clear();
  state.replies.clear();
  state.jobs.clear();
  state.voiced.clear();
  endStreaming();
}

function showImage(img, url) {
  // With a token, stored images are fetched with it (an <img> cannot send an Authorization header).
  if (!state.token || !url.startsWith("/attachments/")) {
    img.src = url;
    return;
  }
  fetch(url, { headers: { Authorization: `Bearer ${state.token}` } })
    .then((response) => (response.ok ? response.blob() : Promise.reject(new Error(response.statusText))))
    .then((blob) => (img.src = URL.createObjectURL(blob)))
    .catch(() => (img.alt = "image (could not be loaded)"));
}

function addMessage(role, { text = "", images = [] }) {
  const bubble = document.createElement("div");
  bubble.className = `message ${role}`;
  for (const url of images) {
    const img = document.createElement("img");
    showImage(img, url);
    img.alt = "image";
    bubble.appendChild(img);
  }
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  bubble.appendChild(span);
  $("messages").appendChild(bubble);
  scrollDown();
  return bubble;
}

function addHeard(bubble, heard) {
  // A spoken reply the user talked over: the server keeps what was heard, and the next turns use that.
  const words = heard.trim().split(/\s+/).filter(Boolean);
  const note = document.createElement("span");
  note.className = "heard";
  note.textContent = words.length
    ? `Read aloud until you spoke: “${words.length > 8 ? "… " : ""}${words.slice(-8).join(" ")}”`
    : "Cut before any of it was heard.";
  bubble.appendChild(note);
}

function addNote(bubble, text) {
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = text;
  bubble.appendChild(note);
}

function scrollDown() {
  const messages = $("messages");
  messages.scrollTop = messages.scrollHeight;
}

function renderHistory(turns) {
  clearMessages();
  for (const turn of turns) {
    const texts = [];
    const images = [];
    const transcripts = [];
    let heard = null;
    const tools = [];
    for (const part of turn.content) {
      if (part.type === "tool_call" || part.type === "tool_result") tools.push(part);
      if (part.type === "heard") heard = part.text;
      else if (part.type === "text") texts.push(part.text);
      else if (part.type === "image") images.push(part.url);
      else if (part.type === "transcript") transcripts.push(part.text);
      else if (part.type === "image_request") texts.push(`/imagine ${part.text}`);
    }
    const bubble = addMessage(turn.role, { text: texts.join("\n"), images });
    bubble.dataset.turnId = turn.turn_id;
    for (const part of tools) {
      const card = toolCard(bubble, part.call_id, part.name, part.type === "tool_call" ? part.arguments : {});
      if (part.type === "tool_result") showToolResult(card, part.status, part.result, part.error);
      else card.querySelector(".tool-status").textContent = turn.status === "in_progress" ? "running…" : "";
    }
    bubble.dataset.status = turn.status;
    for (const text of transcripts) {
      const span = document.createElement("span");
      span.className = "transcript";
      span.textContent = text;
      bubble.appendChild(span);
    }
    if (turn.role === "assistant" && turn.status === "cancelled") addNote(bubble, "Stopped.");
    if (turn.role === "assistant" && ["failed", "interrupted"].includes(turn.status)) {
      bubble.classList.add("failed");
      addNote(bubble, turn.status === "failed" ? `Failed: ${turn.error || ""}` : "Interrupted: the server stopped during this reply.");
    }
    if (turn.role === "assistant" && turn.status === "in_progress") addNote(bubble, "Still in progress.");
    if (turn.role === "assistant" && heard !== null) addHeard(bubble, heard);
  }
}

// ---------------------------------------------------------------- composing

function submit(event) {
  event.preventDefault();
  const input = $("input");
  const text = input.value.trim();
  if (!text && !state.attachments.length) return;
  if (/^\/imagine\b/i.test(text) && !state.capabilities.image_generator) {
    showError("Not available: this server has no image generator (see [engines] image_generator in its config.toml).");
    return;
  }
  const content = state.attachments.map((a) => ({ type: "image", data: a.base64, mime: a.mime }));
  if (text) content.push({ type: "text", text });
  cutAudio(); // a new message talks over a reply still being read aloud (the server stops it too)
  const eventId = `turn-${++state.counter}`;
  if (!send({ type: "turn.create", event_id: eventId, content })) return;
  const bubble = addMessage("user", { text, images: state.attachments.map((a) => a.url) });
  bubble.dataset.eventId = eventId;
  state.pendingUser.push(bubble);
  if (text) retitle(text);
  input.value = "";
  state.attachments = [];
  renderAttachments();
}

async function addFiles(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) {
      showError(`Not an image: ${file.name || file.type || "that file"}`);
      continue;
    }
    try {
      const blob = await shrink(file);
      state.attachments.push({ mime: blob.type, base64: await toBase64(blob), url: URL.createObjectURL(blob) });
    } catch (error) {
      showError(`Could not read ${file.name || "the image"}: ${error.message || error}`);
    }
  }
  renderAttachments();
}

async function shrink(file) {
  // Photos larger than MAX_SIDE or MAX_UPLOAD_BYTES are scaled down as JPEG; others go as they are.
  if (file.size <= MAX_UPLOAD_BYTES && file.type !== "image/jpeg" && file.type !== "image/png") return file;
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size <= MAX_UPLOAD_BYTES) return file;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
}

function toBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.attachments.forEach((attachment, index) => {
    const item = document.createElement("div");
    item.className = "attachment";
    const img = document.createElement("img");
    img.src = attachment.url;
    img.alt = "attached image";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = "Remove";
    remove.onclick = () => {
      state.attachments.splice(index, 1);
      renderAttachments();
    };
    item.append(img, remove);
    box.appendChild(item);
  });
}

// ---------------------------------------------------------------- microphone

async function toggleMic() {
  if (state.mic) return stopMic(true);
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser cannot record here (a microphone needs https or localhost).");
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
    const context = new AudioContext();
    await context.audioWorklet.addModule("/pcm-worklet.js");
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "pcm-capture", { processorOptions: { targetRate: 16000 } });
    node.port.onmessage = (message) => {
      if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(message.data);
    };
    const mute = context.createGain();
    mute.gain.value = 0; // keep the graph pulled without playing the microphone back
    source.connect(node).connect(mute).connect(context.destination);
    state.mic = { stream, context };
    $("mic").setAttribute("aria-pressed", "true");
  } catch (error) {
    showError(`The microphone could not be opened: ${error.message || error}`);
  }
}

function stopMic(commit) {
  if (!state.mic) return;
  state.mic.stream.getTracks().forEach((track) => track.stop());
  state.mic.context.close();
  state.mic = null;
  $("mic").setAttribute("aria-pressed", "false");
  $("mic").classList.remove("hearing");
  if (commit && state.hearing) send({ type: "audio.commit" }); // the user stopped mid-sentence: answer what was said
  state.hearing = false;
}

// ---------------------------------------------------------------- speaker (spoken replies)

// Each reply's speech comes as response.audio.delta events (base64 PCM16 mono at sample_rate). Every chunk
// becomes an AudioBuffer started exactly where the previous one ends on one AudioContext, so the speech
// plays without gaps or overlaps however the chunks arrive. What was played is measured on the context's clock.
const LEAD_S = 0.05; // after a pause (the first chunk, or a chunk later than the audio before it): start this much ahead

const player = {
  context: null,
  nextStartTime: 0, // where the next chunk starts, in context time
  speeches: new Map(), // response_id -> {chunks: [{source, start, duration}], end, serverDone, cut, playedMs}
  shown: null, // response_id the indicator is about (the latest spoken reply)
  cut: new Set(), // response_ids whose playback was stopped: their late chunks are dropped
  timer: null,
  reports: 0,

  audio() {
    if (!this.context) this.context = new AudioContext();
    if (this.context.state === "suspended") this.context.resume().catch(() => {});
    return this.context;
  },

  played(speech) {
    // Milliseconds of this reply's speech played so far: each chunk counts from its start to now, up to its length.
    if (speech.cut) return speech.playedMs;
    const now = this.context ? this.context.currentTime : 0;
    let seconds = 0;
    for (const chunk of speech.chunks) seconds += Math.min(Math.max(now - chunk.start, 0), chunk.duration);
    return seconds * 1000;
  },

  playing(speech) {
    return !speech.cut && !(speech.serverDone && (!this.context || this.context.currentTime >= speech.end));
  },

  active() {
    for (const speech of this.speeches.values()) if (this.playing(speech)) return true;
    return false;
  },

  show() {
    // The indicator, and data attributes on <body> for tests and tools: data-audio-playing, data-audio-played-ms, data-audio-response.
    const speech = this.shown && this.speeches.get(this.shown);
    const playing = Boolean(speech && this.playing(speech));
    const ms = speech ? Math.round(this.played(speech)) : 0;
    document.body.dataset.audioPlaying = String(playing);
    document.body.dataset.audioPlayedMs = String(ms);
    document.body.dataset.audioResponse = this.shown || "";
    const indicator = $("speech-state");
    indicator.hidden = !speech;
    indicator.classList.toggle("playing", playing);
    const seconds = (ms / 1000).toFixed(1);
    indicator.textContent = !speech ? "" : playing ? `Speaking ${seconds} s` : speech.cut ? `Stopped after ${seconds} s` : `Spoke ${seconds} s`;
    for (const [id, each] of this.speeches) state.replies.get(id)?.classList.toggle("speaking", this.playing(each));
    for (const [id, each] of this.speeches) if (id !== this.shown && !this.playing(each)) this.speeches.delete(id);
    if (playing && !this.timer) this.timer = setInterval(() => this.show(), 100);
    if (!this.active() && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
    updateStop();
  },
};

function wantsAudio() {
  return state.speakerOn && state.speechAvailable;
}

function renderSpeaker() {
  const button = $("speaker");
  button.disabled = !state.speechAvailable;
  button.setAttribute("aria-pressed", String(wantsAudio()));
  button.title = !state.speechAvailable
    ? "No speech synthesizer on this server, so replies cannot be read aloud"
    : state.speakerOn ? "Speaker on: replies are read aloud (click to turn off)" : "Speaker off: click to hear replies read aloud";
}

function toggleSpeaker() {
  state.speakerOn = !state.speakerOn;
  localStorage.setItem(SPEAKER_KEY, state.speakerOn ? "on" : "off");
  renderSpeaker();
  if (state.speakerOn) player.audio(); // this click is the gesture that lets the page play sound
  else cutAudio();
  restartIfIdle();
}

function restartIfIdle() {
  // The speaker switch asks for (or stops) spoken replies with a new session.start on the same conversation,
  // with last_seq so nothing is replayed and the page stays. The server refuses that while a turn is in
  // progress, so it waits until nothing is (this runs again whenever a reply, its speech or a picture ends).
  if (!state.sessionReady || state.sessionAudio === wantsAudio()) return;
  if (state.streaming || state.voiced.size || state.jobs.size || state.pendingUser.length) return;
  state.sessionReady = false; // until its session.started
  startSession(state.conversationId, state.lastSeq, "restart");
}

function unlockAudio() {
  if (wantsAudio()) player.audio(); // made (or resumed) during a gesture, so the browser lets it play
}

function decodePcm16(base64) {
  const bytes = atob(base64);
  const samples = new Float32Array(bytes.length >> 1);
  for (let i = 0; i < samples.length; i++) {
    const value = bytes.charCodeAt(2 * i) | (bytes.charCodeAt(2 * i + 1) << 8); // little-endian
    samples[i] = (value >= 0x8000 ? value - 0x10000 : value) / 32768;
  }
  return samples;
}

function audioDelta(event) {
  if (!state.sessionAudio || !wantsAudio() || player.cut.has(event.response_id)) return; // switched off, or stopped
  const samples = decodePcm16(event.data);
  if (!samples.length) return;
  const context = player.audio();
  let speech = player.speeches.get(event.response_id);
  if (!speech) {
    speech = { chunks: [], end: 0, serverDone: false, cut: false, playedMs: 0 };
    player.speeches.set(event.response_id, speech);
    player.shown = event.response_id;
  }
  const buffer = context.createBuffer(1, samples.length, event.sample_rate);
  buffer.copyToChannel(samples, 0);
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(context.destination);
  const start = Math.max(player.nextStartTime, context.currentTime + LEAD_S * (player.nextStartTime < context.currentTime));
  source.start(start);
  source.onended = () => player.show();
  player.nextStartTime = start + buffer.duration;
  speech.chunks.push({ source, start, duration: buffer.duration });
  speech.end = player.nextStartTime;
  player.show();
}

function audioDone(event) {
  state.voiced.delete(event.response_id);
  const speech = player.speeches.get(event.response_id);
  if (speech) {
    speech.serverDone = true;
    // Said again now that the server has finished with this reply: a report it got while the reply was still
    // stopping can be overwritten by its own estimate (what it had sent) when the speech ends.
    if (speech.cut && speech.reportAgain) report(event.response_id, speech.playedMs);
  }
  if (event.status === "failed") {
    const bubble = state.replies.get(event.response_id);
    if (bubble) addNote(bubble, `Not read aloud: ${event.error ? event.error.message : "the speech failed"}`);
  }
  player.show();
  restartIfIdle();
}

function report(responseId, ms) {
  send({ type: "response.audio.played", event_id: `played-${++player.reports}`, response_id: responseId, ms: Math.round(ms) });
}

function cutAudio() {
  // Barge-in: stop every scheduled chunk at once and tell the server how much of each reply was heard.
  for (const [id, speech] of player.speeches) {
    if (!player.playing(speech)) continue;
    speech.playedMs = Math.round(player.played(speech));
    speech.cut = true;
    speech.reportAgain = !speech.serverDone;
    player.cut.add(id);
    for (const chunk of speech.chunks) {
      chunk.source.onended = null;
      try {
        chunk.source.stop();
      } catch {
        // already stopped
      }
    }
    report(id, speech.playedMs);
    const bubble = state.replies.get(id);
    if (bubble) {
      const note = document.createElement("span");
      note.className = "heard";
      note.textContent = `Stopped reading aloud after ${(speech.playedMs / 1000).toFixed(1)} s.`;
      bubble.appendChild(note);
    }
  }
  player.nextStartTime = 0;
  player.show();
}

// ---------------------------------------------------------------- recent conversations

function recent() {
  try {
    return JSON.parse(localStorage.getItem(RECENT_KEY)) || [];
  } catch {
    return [];
  }
}

function remember(id) {
  const list = recent();
  if (!list.some((item) => item.id === id)) list.unshift({ id, title: "New conversation", at: Date.now() });
  localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, 30)));
  renderRecent();
}

function retitle(text) {
  const list = recent();
  const item = list.find((entry) => entry.id === state.conversationId);
  if (item && item.title === "New conversation") item.title = text.slice(0, 60);
  if (item) item.at = Date.now();
  list.sort((a, b) => b.at - a.at);
  localStorage.setItem(RECENT_KEY, JSON.stringify(list));
  renderRecent();
}

function renderRecent() {
  const ul = $("recent");
  ul.replaceChildren();
  for (const item of recent()) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `?c=${encodeURIComponent(item.id)}`;
    a.textContent = item.title;
    a.title = item.id;
    if (item.id === state.conversationId) a.className = "current";
    a.onclick = (event) => {
      event.preventDefault();
      switchTo(item.id);
    };
    li.appendChild(a);
    ul.appendChild(li);
  }
}

function switchTo(id) {
  if (state.streaming || state.voiced.size) {
    showError("Wait for the reply to finish (or stop it) before switching conversations.");
    return;
  }
  stopMic(false);
  cutAudio();
  hideError();
  closeSidebar();
  state.lastSeq = null;
  startSession(id);
}

// ---------------------------------------------------------------- small things

function setStatus(kind, text) {
  const status = $("status");
  status.className = `status ${kind}`;
  status.textContent = text;
}

function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("menu").setAttribute("aria-expanded", "false");
}

function toggleSidebar() {
  const open = document.body.classList.toggle("sidebar-open");
  $("menu").setAttribute("aria-expanded", String(open));
}

function init() {
  $("composer").addEventListener("submit", submit);
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) submit(event);
  });
  $("input").addEventListener("paste", (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles([...event.dataTransfer.files]);
  });
  $("file-input").addEventListener("change", (event) => {
    addFiles([...event.target.files]);
    event.target.value = "";
  });
  $("stop").addEventListener("click", () => {
    cutAudio();
    const stopping = new Set(state.voiced); // replies whose speech the server may still be making
    if (state.streaming) stopping.add(state.streaming);
    for (const id of stopping) send({ type: "response.cancel", event_id: `cancel-${++state.counter}`, response_id: id });
  });
  $("mic").addEventListener("click", toggleMic);
  $("speaker").addEventListener("click", toggleSpeaker);
  for (const kind of ["pointerdown", "keydown"]) document.addEventListener(kind, unlockAudio, true); // browsers start audio only after a gesture
  renderSpeaker();
  player.show();
  $("new-conversation").addEventListener("click", () => switchTo(null));
  $("error-close").addEventListener("click", hideError);
  $("menu").addEventListener("click", toggleSidebar);
  document.querySelector("main").addEventListener("click", (event) => {
    if (event.target !== $("menu") && document.body.classList.contains("sidebar-open")) closeSidebar(); // a tap beside the open sidebar
  });
  document.addEventListener("keydown", (event) => event.key === "Escape" && closeSidebar());
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token-input").value.trim();
    $("token-input").value = "";
    $("error").hidden = true;
    startSession(state.conversationId);
  });
  renderRecent();
  connect();
}

init();
