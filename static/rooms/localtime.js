/*
 * chatsite pages rendered by the server (search results, the room list, profiles): the times
 * they print are the server's (UTC). Each <time datetime="ISO 8601" data-local="date|datetime">
 * is shown again in the reader's own time zone and the page's language, in the formats the room
 * page uses for its messages (static/rooms/room/dom.js), with the full date and time as its
 * title. Without this script the server's text stays.
 */

const language = document.documentElement.lang || undefined;
const formats = {
  date: new Intl.DateTimeFormat(language, { dateStyle: "medium" }),
  datetime: new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" }),
};
const full = new Intl.DateTimeFormat(language, { dateStyle: "full", timeStyle: "long" });

export function localizeTimes(root = document) {
  for (const node of root.querySelectorAll("time[data-local][datetime]")) {
    const when = new Date(node.dateTime);
    if (Number.isNaN(when.getTime())) continue;
    node.textContent = (formats[node.dataset.local] || formats.datetime).format(when);
    node.title = full.format(when);
  }
}

localizeTimes();
