// The Holdfast widget: calls made before widget.js loads wait in this queue.
// (A file of its own: the demo's Content-Security-Policy allows no inline script.)
window.Holdfast = window.Holdfast || [];
(function () {
  // A signed-in shopper would come from your session; the demo makes one up.
  var id = null;
  try {
    id = localStorage.getItem('demo-customer');
    if (!id) localStorage.setItem('demo-customer', id = 'cust-' + Math.random().toString(36).slice(2, 8));
  } catch (e) { id = 'cust-guest'; }
  Holdfast.push(['identify', { id: id, name: 'Demo shopper', plan: 'Bean Club', cart_items: 2 }]);
})();
