/* ltlink: the simulated SoC's host link, a byte stream between a stream PHY's pads and one
 * TCP client (pyserial's socket://), the role a USB-UART plays on a board.
 *
 * Why not LiteX's serial2tcp: it write()s one byte per cycle, sets no TCP_NODELAY (so a host
 * command split over two segments waits ~40 ms for a delayed ACK and trips UARTBone's command
 * timeout), can overflow its receive buffer, and takes a port that may already be in use.
 * This module listens on 127.0.0.1, binds an ephemeral port when asked for port 0 and prints
 * "ltlink: listening on 127.0.0.1:PORT" so the launcher learns it, sets TCP_NODELAY, batches
 * device->host bytes into one write() per burst, only reads what its ring buffer can hold
 * (TCP flow control does the rest), and lets a new client replace the old one (a host that
 * crashed without closing its socket must not lock the simulator).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <json-c/json.h>

#include "error.h"
#include "modules.h"

#define RX_SIZE (1 << 16)
#define TX_SIZE (1 << 16)

struct session_s {
  char *tx;            /* device -> host: source_* pads */
  char *tx_valid;
  char *tx_ready;
  char *rx;            /* host -> device: sink_* pads */
  char *rx_valid;
  char *rx_ready;
  char *sys_clk;
  clk_edge_state_t edge;
  struct event *ev;
  int fd;
  unsigned char rxbuf[RX_SIZE];
  size_t rx_start, rx_len;
  unsigned char txbuf[TX_SIZE];
  size_t tx_len;
};

static struct event_base *base;

static void drop_client(struct session_s *s)
{
  if (s->ev) {
    event_del(s->ev);
    event_free(s->ev);
    s->ev = NULL;
  }
  if (s->fd >= 0)
    close(s->fd);
  s->fd = -1;
  s->rx_len = 0;
  s->rx_start = 0;
  s->tx_len = 0;
}

static void flush_tx(struct session_s *s)
{
  size_t off = 0;
  while (s->fd >= 0 && off < s->tx_len) {
    /* send(MSG_NOSIGNAL), not write(): a client that vanished mid-reply must cost the
     * simulator its connection, not its life (write() raises SIGPIPE, which kills it). */
    ssize_t n = send(s->fd, s->txbuf + off, s->tx_len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += n;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;           /* keep the rest for the next flush */
    } else {
      drop_client(s);  /* host went away */
      return;
    }
  }
  memmove(s->txbuf, s->txbuf + off, s->tx_len - off);
  s->tx_len -= off;
}

static void read_cb(evutil_socket_t fd, short event, void *arg)
{
  struct session_s *s = arg;
  while (s->rx_len < RX_SIZE) {
    size_t tail = (s->rx_start + s->rx_len) % RX_SIZE;
    size_t room = RX_SIZE - s->rx_len;
    if (tail + room > RX_SIZE)
      room = RX_SIZE - tail;
    ssize_t n = read(fd, s->rxbuf + tail, room);
    if (n > 0) {
      s->rx_len += n;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      drop_client(s);  /* EOF or error: wait for the next client */
      return;
    }
  }
}

static void accept_cb(struct evconnlistener *listener, evutil_socket_t fd,
                      struct sockaddr *address, int socklen, void *ctx)
{
  struct session_s *s = ctx;
  int one = 1;
  if (s->fd >= 0)      /* one host at a time: a new client replaces a stale one */
    drop_client(s);
  int rcvbuf = 64 * 1024;  /* bound the host's bytes in flight, so its replies stay prompt */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  evutil_make_socket_nonblocking(fd);
  s->fd = fd;
  s->rx_len = 0;
  s->rx_start = 0;
  s->tx_len = 0;
  s->ev = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, s);
  event_add(s->ev, NULL);
}

static int ltlink_start(void *b)
{
  base = (struct event_base *)b;
  return RC_OK;
}

static int get_port_arg(char *args, int *port)
{
  json_object *obj = NULL, *jsobj;
  *port = 0;
  if (!args)
    return RC_OK;
  jsobj = json_tokener_parse(args);
  if (jsobj && json_object_object_get_ex(jsobj, "port", &obj))
    *port = json_object_get_int(obj);
  if (jsobj)
    json_object_put(jsobj);
  return RC_OK;
}

static int ltlink_new(void **sess, char *args)
{
  struct session_s *s;
  struct evconnlistener *listener;
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);
  int port;

  if (!sess)
    return RC_INVARG;
  get_port_arg(args, &port);
  s = calloc(1, sizeof(*s));
  if (!s)
    return RC_NOENMEM;
  s->fd = -1;

  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons(port);
  listener = evconnlistener_new_bind(base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                     -1, (struct sockaddr *)&sin, sizeof(sin));
  if (!listener) {
    fprintf(stderr, "ltlink: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
    free(s);
    return RC_ERROR;
  }
  getsockname(evconnlistener_get_fd(listener), (struct sockaddr *)&sin, &len);
  printf("ltlink: listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
  fflush(stdout);
  *sess = s;
  return RC_OK;
}

static void get_pad(struct pad_s *pads, const char *name, char **signal)
{
  for (int i = 0; pads[i].name; i++)
    if (!strcmp(pads[i].name, name))
      *signal = (char *)pads[i].signal;
}

static int ltlink_add_pads(void *sess, struct pad_list_s *plist)
{
  struct session_s *s = sess;
  if (!sess || !plist)
    return RC_INVARG;
  if (!strcmp(plist->name, "hostlink")) {
    get_pad(plist->pads, "sink_data", &s->rx);
    get_pad(plist->pads, "sink_valid", &s->rx_valid);
    get_pad(plist->pads, "sink_ready", &s->rx_ready);
    get_pad(plist->pads, "source_data", &s->tx);
    get_pad(plist->pads, "source_valid", &s->tx_valid);
    get_pad(plist->pads, "source_ready", &s->tx_ready);
  }
  if (!strcmp(plist->name, "sys_clk"))
    get_pad(plist->pads, "sys_clk", &s->sys_clk);
  return RC_OK;
}

static int ltlink_tick(void *sess, uint64_t time_ps)
{
  struct session_s *s = sess;
  if (!clk_pos_edge(&s->edge, *s->sys_clk))
    return RC_OK;

  /* Device -> host: collect a burst, send it when the device pauses or the buffer fills.
   * Like a UART with nobody listening, bytes sent while no client is connected are lost. */
  *s->tx_ready = 1;
  if (*s->tx_valid && s->fd >= 0) {
    if (s->tx_len == TX_SIZE)
      flush_tx(s);
    if (s->tx_len < TX_SIZE)
      s->txbuf[s->tx_len++] = *s->tx;
  } else if (s->tx_len) {
    flush_tx(s);
  }

  /* Host -> device: one byte per cycle while the device takes them. */
  if (*s->rx_valid && *s->rx_ready && s->rx_len) {
    s->rx_start = (s->rx_start + 1) % RX_SIZE;
    s->rx_len--;
  }
  *s->rx_valid = 0;
  if (s->rx_len) {
    *s->rx = s->rxbuf[s->rx_start];
    *s->rx_valid = 1;
  }
  return RC_OK;
}

static int ltlink_close(void *sess)
{
  struct session_s *s = sess;
  flush_tx(s);
  drop_client(s);
  return RC_OK;
}

static struct ext_module_s ext_mod = {
  "ltlink",
  ltlink_start,
  ltlink_new,
  ltlink_add_pads,
  ltlink_close,
  ltlink_tick
};

int litex_sim_ext_module_init(int (*register_module)(struct ext_module_s *))
{
  return register_module(&ext_mod);
}
