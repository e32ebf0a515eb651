// Presenter view of the Lesson tab: a button that enters full screen with larger lesson type, and the
// arrow keys ← / → for the previous / next step while presenting.
//
// Runs as the gr.HTML's `js_on_load` (explorer/tabs/lesson.py); Gradio provides `element`. The keys click
// the tab's own ◀ / ▶ buttons, so a step change goes through the same Python events as a click. Keys typed
// into a text field, a number box or a menu are left alone.
const PRESENTING = 'lesson-presenting';
const button = element.querySelector('.lesson-present');

function presenting() {
  return document.body.classList.contains(PRESENTING);
}

function setPresenting(on) {
  document.body.classList.toggle(PRESENTING, on);
  button.textContent = on ? '✕ Leave presenter view' : '⛶ Presenter view';
}

button.addEventListener('click', () => {
  if (presenting()) {
    setPresenting(false);
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    return;
  }
  setPresenting(true);
  // Full screen is a bonus: a page inside a frame without allow="fullscreen" refuses it and keeps the
  // larger type and the keys.
  if (document.documentElement.requestFullscreen && !document.fullscreenElement) {
    document.documentElement.requestFullscreen().catch(() => {});
  }
});

function typing(target) {
  if (!target || !target.closest) return false;
  return Boolean(target.isContentEditable || target.closest('input, textarea, select, [contenteditable=""], [contenteditable="true"]'));
}

// One document listener per page, however often Gradio runs this script.
if (!window.vaeLessonKeys) {
  window.vaeLessonKeys = true;
  document.addEventListener('keydown', (e) => {
    if (!document.body.classList.contains(PRESENTING) || e.altKey || e.ctrlKey || e.metaKey || typing(e.target)) return;
    const id = e.key === 'ArrowRight' ? 'lesson-next' : e.key === 'ArrowLeft' ? 'lesson-prev' : null;
    const target = id && document.getElementById(id);
    if (!target) return;
    e.preventDefault();
    (target.tagName === 'BUTTON' ? target : target.querySelector('button') || target).click();
  });
  // Esc leaves full screen without a click on the button: leave the presenter view with it.
  document.addEventListener('fullscreenchange', () => {
    if (!document.fullscreenElement && document.body.classList.contains(PRESENTING)) {
      document.body.classList.remove(PRESENTING);
      document.querySelectorAll('.lesson-present').forEach((b) => { b.textContent = '⛶ Presenter view'; });
    }
  });
}
