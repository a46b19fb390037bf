// Runs inside the sandboxed frame of a text/html output (origin "null", no
// access to the page): it only tells the page the height of its content, so
// the frame fits it. The page checks that a message comes from that frame.
(() => {
  let last = -1;
  const post = () => {
    const height = Math.ceil(document.documentElement.getBoundingClientRect().height);
    if (height === last) return;
    last = height;
    parent.postMessage({ spinFrameHeight: height }, "*");
  };
  new ResizeObserver(post).observe(document.documentElement);
  addEventListener("load", post);
})();
