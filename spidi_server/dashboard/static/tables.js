/*
 * Sortable tables: a column's sort key per row (null sorts last whichever the direction), the
 * headers' aria-sort, and the click / Enter handling of a header that changes the sort.
 */

function compare(a, b) {
  if (a === b) return 0;
  if (a === null) return 1; // empty values last whatever the direction
  if (b === null) return -1;
  return a < b ? -1 : 1;
}

/** Sort ``rows`` in place by ``columns[sort.key]`` (the first column if unknown), then ``tiebreak``. */
export function sortRows(rows, columns, sort, tiebreak) {
  const key = columns[sort.key] || columns[Object.keys(columns)[0]];
  return rows.sort((a, b) => {
    const va = key(a), vb = key(b);
    if (va === null || vb === null) return compare(va, vb) || compare(tiebreak(a), tiebreak(b));
    return sort.dir * compare(va, vb) || compare(tiebreak(a), tiebreak(b));
  });
}

export function renderSortHeaders(table, sort) {
  for (const th of table.querySelectorAll("th[data-key]")) {
    const active = th.dataset.key === sort.key;
    th.setAttribute("aria-sort", active ? (sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

/** Clicking a header (or Enter / Space on it) sorts by it, again reverses; numbers start descending. */
export function bindSortable(table, getSort, rerender) {
  for (const th of table.querySelectorAll("th[data-key]")) {
    const activate = () => {
      const sort = getSort();
      if (sort.key === th.dataset.key) sort.dir = -sort.dir;
      else {
        sort.key = th.dataset.key;
        sort.dir = th.classList.contains("num") || th.dataset.desc ? -1 : 1;
      }
      rerender();
    };
    th.tabIndex = 0;
    th.addEventListener("click", activate);
    th.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        activate();
      }
    });
  }
}
