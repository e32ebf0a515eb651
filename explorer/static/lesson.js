// Presenter view of the Lesson tab: a button that enters full screen with larger lesson type, and the
// arrow keys ← / → for the previous / next step while presenting.
//
// Runs as the gr.HTML's `js_on_load` (explorer/tabs/lesson.py); Gradio provides `element`. The keys click
// the tab's own ◀ / ▶ buttons, so a step change goes through the same Python events as a click. Keys typed
// into a text field, a number box or a menu are left alone.
//
// The presenter state is a class on the tab's column (#lesson): Gradio scopes the app's CSS to its
// container, so a class on <body> could not be styled.
const PRESENTING = 'lesson-presenting';
const ENTER = '⛶ Present', LEAVE = '✕ Leave';
const button = element.querySelector('.lesson-present');

function presenting() {
  const lesson = document.getElementById('lesson');
  return Boolean(lesson && lesson.classList.contains(PRESENTING));
}

function setPresenting(on) {
  const lesson = document.getElementById('lesson');
  if (lesson) lesson.classList.toggle(PRESENTING, on);
  document.querySelectorAll('.lesson-present').forEach((b) => { b.textContent = on ? LEAVE : ENTER; });
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
    if (!presenting() || e.altKey || e.ctrlKey || e.metaKey || typing(e.target)) return;
    const id = e.key === 'ArrowRight' ? 'lesson-next' : e.key === 'ArrowLeft' ? 'lesson-prev' : null;
    const target = id && document.getElementById(id);
    if (!target) return;
    e.preventDefault();
    (target.tagName === 'BUTTON' ? target : target.querySelector('button') || target).click();
  });
  // Esc leaves full screen without a click on the button: leave the presenter view with it.
  document.addEventListener('fullscreenchange', () => {
    if (!document.fullscreenElement && presenting()) setPresenting(false);
  });
}
