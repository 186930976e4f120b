// A tiny single-page app: routes change with history.pushState, so the
// agent sees each "page" in the visitor's trail without a reload.
var ROUTES = {
  home: { title: 'Harbor & Pine Coffee Roasters', h: "This week's roasts", items: [
    ['Ethiopia Guji', 'peach, jasmine, honey', '$18', '#c9824a'],
    ['Colombia Huila', 'red apple, caramel', '$16', '#8c5a3c'],
    ['Harbor Espresso', 'dark chocolate, cherry', '$17', '#4a2f22'],
    ['Decaf Peru', 'cocoa, toasted almond', '$15', '#a3774f']] },
  coffee: { title: 'Coffee — Harbor & Pine', h: 'All coffee', items: [
    ['Kenya Nyeri', 'blackcurrant, grapefruit', '$19', '#b0503a'],
    ['Guatemala Huehue', 'milk chocolate, plum', '$16', '#7b4b32'],
    ['Brazil Cerrado', 'hazelnut, brown sugar', '$14', '#9c6a42'],
    ['Ethiopia Guji', 'peach, jasmine, honey', '$18', '#c9824a']] },
  brewing: { title: 'Brewing gear — Harbor & Pine', h: 'Brewing gear', items: [
    ['Pour-over dripper', 'ceramic, size 02', '$28', '#5d7b8a'],
    ['Burr grinder', '40 grind settings', '$129', '#3f4b52'],
    ['Gooseneck kettle', '0.9 l, thermometer', '$54', '#7a8f6a']] },
  subscribe: { title: 'Subscriptions — Harbor & Pine', h: 'The Bean Club', items: [
    ['Every week', '250 g, roaster\u2019s pick', '$15/wk', '#6b3e1f'],
    ['Every two weeks', '500 g, two origins', '$28/2wk', '#8a5430'],
    ['Monthly', '1 kg, espresso blend', '$49/mo', '#4a2f22']] }
};
function bag(color) {
  var ns = 'http://www.w3.org/2000/svg';
  var s = document.createElementNS(ns, 'svg');
  s.setAttribute('viewBox', '0 0 84 110');
  s.setAttribute('aria-hidden', 'true');
  var b = document.createElementNS(ns, 'path');
  b.setAttribute('d', 'M12 10h60l6 96H6z');
  b.setAttribute('fill', color);
  var l = document.createElementNS(ns, 'rect');
  l.setAttribute('x', '20'); l.setAttribute('y', '44'); l.setAttribute('width', '44'); l.setAttribute('height', '30'); l.setAttribute('rx', '3');
  l.setAttribute('fill', '#fbf7f1');
  s.appendChild(b); s.appendChild(l);
  return s;
}
function render(name) {
  var r = ROUTES[name] || ROUTES.home, grid = document.getElementById('products');
  document.title = r.title;
  document.getElementById('section-title').textContent = r.h;
  while (grid.firstChild) grid.removeChild(grid.firstChild);
  r.items.forEach(function (it) {
    var card = document.createElement('article');
    card.className = 'card';
    var top = document.createElement('div');
    top.className = 'bag';
    top.style.background = 'linear-gradient(160deg, #f4e9d8, ' + it[3] + '33)';
    top.appendChild(bag(it[3]));
    var txt = document.createElement('div');
    txt.className = 'txt';
    var h = document.createElement('h3'); h.textContent = it[0];
    var n = document.createElement('p'); n.className = 'notes'; n.textContent = it[1];
    var row = document.createElement('div'); row.className = 'row';
    var p = document.createElement('span'); p.className = 'price'; p.textContent = it[2];
    var add = document.createElement('button'); add.type = 'button'; add.textContent = 'Add';
    row.appendChild(p); row.appendChild(add);
    txt.appendChild(h); txt.appendChild(n); txt.appendChild(row);
    card.appendChild(top); card.appendChild(txt);
    grid.appendChild(card);
  });
  var links = document.querySelectorAll('[data-route]');
  for (var i = 0; i < links.length; i++) {
    if (links[i].getAttribute('data-route') === name) links[i].setAttribute('aria-current', 'page');
    else links[i].removeAttribute('aria-current');
  }
}
function current() {
  var m = /[?&]p=([a-z]+)/.exec(location.search);
  return m ? m[1] : 'home';
}
document.addEventListener('click', function (e) {
  var a = e.target.closest && e.target.closest('a[data-route]');
  if (!a || e.metaKey || e.ctrlKey || e.shiftKey) return;
  e.preventDefault();
  history.pushState({}, '', a.getAttribute('href'));
  render(a.getAttribute('data-route'));
});
window.addEventListener('popstate', function () { render(current()); });
render(current());

// The page's CSP allows no inline handlers: the button is wired here.
document.getElementById('ask').addEventListener('click', function () {
  if (window.Holdfast && window.Holdfast.open) window.Holdfast.open();
});
