// Click a header to sort its table; a cell's data-v (the unrounded number) is its sort key.
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute('data-order') !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-order'); });
    th.setAttribute('data-order', asc ? 'asc' : 'desc');
    function key(row) { var c = row.cells[col]; var v = c.getAttribute('data-v');
      if (v === null) { v = c.textContent; } var n = parseFloat(v);
      return (v !== '' && !isNaN(n) && isFinite(v)) ? n : v.toLowerCase(); }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { var x = key(a), y = key(b);
      if (typeof x === typeof y) { return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }
      return (typeof x === 'number' ? -1 : 1) * (asc ? 1 : -1); });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
