// Unread counts in the tab title and opt-in desktop notifications while the tab is hidden.
// A notification names the sender only: message text would linger in the system's notification history.

const BASE_TITLE = 'SecChat';

export function updateTitle(state) {
  let unread = state.incomingRequests.size;
  for (const count of state.unread.values()) unread += count;
  const title = unread > 0 ? `(${unread}) ${BASE_TITLE}` : BASE_TITLE;
  if (document.title !== title) document.title = title;
}

export function notificationsSupported() {
  return typeof Notification === 'function';
}

/** Asks for permission when needed; resolves whether notifications may be shown. */
export async function enableNotifications() {
  if (!notificationsSupported()) return false;
  if (Notification.permission === 'granted') return true;
  if (Notification.permission === 'denied') return false;
  return (await Notification.requestPermission()) === 'granted';
}

export function notify(state, title, body) {
  if (!state.notifications || !document.hidden || !notificationsSupported() || Notification.permission !== 'granted') return;
  try {
    const notification = new Notification(title, { body, tag: 'secchat', silent: false });
    notification.addEventListener('click', () => {
      window.focus();
      notification.close();
    });
  } catch {
    // some browsers only allow notifications from a service worker: nothing to do
  }
}
