/* Test helpers: mosquitto broker process control and a collecting MQTT v5
 * client. The broker config is generated per test in a temp dir: a loopback
 * listener on a port found free by binding port 0, `user root` so that a
 * broker started as root keeps access to that dir, optional persistence,
 * password file and TLS. The client runs its own network thread
 * (mosquitto_loop + reconnect every 100 ms) and queues messages under a mutex.
 * Threads: the test thread, and one network thread per client. */
#include "mqtt-helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

struct _MqttBroker {
  char *dir;
  char *conf;
  int port;
  GPid pid;
};

static gsize lib_once;

static void
lib_init(void)
{
  if (g_once_init_enter(&lib_once)) {
    mosquitto_lib_init();
    g_once_init_leave(&lib_once, 1);
  }
}

int
mqtt_test_free_port(void)
{
  struct sockaddr_in a = {0};
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

gboolean
mqtt_test_port_accepts(int port)
{
  struct sockaddr_in a = {0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  gboolean ok;

  a.sin_family = AF_INET;
  a.sin_port = htons((guint16)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

static gboolean
broker_spawn(MqttBroker *b, GError **error)
{
  const char *argv[] = {"mosquitto", "-c", b->conf, NULL};
  gint64 until;

  if (!g_spawn_async(NULL, (char **)argv, NULL,
                     G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL |
                         G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, &b->pid, error))
    return FALSE;
  until = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  while (g_get_monotonic_time() < until) {
    int status;
    if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
      b->pid = 0;
      g_set_error(error, G_SPAWN_ERROR, G_SPAWN_ERROR_FAILED,
                  "mosquitto exited at start (see %s/mosquitto.log)", b->dir);
      return FALSE;
    }
    if (mqtt_test_port_accepts(b->port))
      return TRUE;
    g_usleep(10000);
  }
  g_set_error(error, G_SPAWN_ERROR, G_SPAWN_ERROR_FAILED, "mosquitto did not listen on %d",
              b->port);
  return FALSE;
}

MqttBroker *
mqtt_broker_start(const MqttBrokerOptions *opts, GError **error)
{
  MqttBrokerOptions none = {0};
  g_autoptr(GString) conf = g_string_new(NULL);
  MqttBroker *b;

  if (opts == NULL)
    opts = &none;
  b = g_new0(MqttBroker, 1);
  b->dir = g_dir_make_tmp("mqtt-broker-XXXXXX", error);
  if (b->dir == NULL) {
    g_free(b);
    return NULL;
  }
  b->conf = g_build_filename(b->dir, "mosquitto.conf", NULL);
  for (int attempt = 0; attempt < 5; attempt++) {
    b->port = mqtt_test_free_port();
    g_string_truncate(conf, 0);
    g_string_append_printf(conf, "user root\nlistener %d 127.0.0.1\n", b->port);
    g_string_append_printf(conf, "allow_anonymous %s\n", opts->password_file ? "false" : "true");
    if (opts->password_file)
      g_string_append_printf(conf, "password_file %s\n", opts->password_file);
    if (opts->acl_file)
      g_string_append_printf(conf, "acl_file %s\n", opts->acl_file);
    if (opts->certfile)
      g_string_append_printf(conf, "cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate %s\n",
                             opts->cafile, opts->certfile, opts->keyfile,
                             opts->require_certificate ? "true" : "false");
    if (opts->persistence)
      g_string_append_printf(conf, "persistence true\npersistence_location %s/\n", b->dir);
    g_string_append_printf(conf, "log_dest file %s/mosquitto.log\nlog_type all\n", b->dir);
    g_string_append(conf, "max_queued_messages 100000\n");
    if (!g_file_set_contents(b->conf, conf->str, -1, error)) {
      mqtt_broker_free(b);
      return NULL;
    }
    g_clear_error(error);
    if (broker_spawn(b, error))
      return b;
    if (attempt < 4)
      g_clear_error(error);
  }
  mqtt_broker_free(b);
  return NULL;
}

int
mqtt_broker_get_port(MqttBroker *b)
{
  return b->port;
}

const char *
mqtt_broker_get_dir(MqttBroker *b)
{
  return b->dir;
}

void
mqtt_broker_stop(MqttBroker *b, int sig)
{
  int status;

  if (b->pid <= 0)
    return;
  kill(b->pid, sig);
  while (waitpid(b->pid, &status, 0) < 0 && errno == EINTR)
    ;
  g_spawn_close_pid(b->pid);
  b->pid = 0;
}

gboolean
mqtt_broker_restart(MqttBroker *b, GError **error)
{
  mqtt_broker_stop(b, SIGTERM);
  for (int attempt = 0; attempt < 50; attempt++) {
    g_clear_error(error);
    if (broker_spawn(b, error))
      return TRUE;
    g_usleep(100000); /* the port may linger for a moment */
  }
  return FALSE;
}

void
mqtt_test_rm_rf(const char *dir)
{
  g_autoptr(GDir) d = NULL;
  const char *name;

  if (dir == NULL || (d = g_dir_open(dir, 0, NULL)) == NULL)
    return;
  while ((name = g_dir_read_name(d)) != NULL) {
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
      mqtt_test_rm_rf(p);
    else
      g_unlink(p);
  }
  g_rmdir(dir);
}

void
mqtt_broker_free(MqttBroker *b)
{
  if (b == NULL)
    return;
  mqtt_broker_stop(b, SIGKILL);
  if (g_getenv("MQTT_TEST_KEEP") == NULL)
    mqtt_test_rm_rf(b->dir);
  g_free(b->dir);
  g_free(b->conf);
  g_free(b);
}

/* ---------- client ---------- */

struct _MqttClient {
  struct mosquitto *mosq;
  char **filters;
  GThread *thread;
  GMutex lock;
  GQueue msgs;
  gboolean connected;
  gboolean stop;
  int port;
};

void
mqtt_msg_free(MqttMsg *m)
{
  if (m == NULL)
    return;
  g_free(m->topic);
  g_clear_pointer(&m->payload, g_bytes_unref);
  g_free(m->response_topic);
  g_clear_pointer(&m->correlation, g_bytes_unref);
  g_free(m->content_type);
  g_clear_pointer(&m->user, g_hash_table_unref);
  g_free(m);
}

static void
client_on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                  const mosquitto_property *props)
{
  MqttClient *c = obj;

  if (rc != 0)
    return;
  for (int i = 0; c->filters && c->filters[i]; i++)
    mosquitto_subscribe_v5(mosq, NULL, c->filters[i], 1, MQTT_SUB_OPT_RETAIN_AS_PUBLISHED, NULL);
  g_mutex_lock(&c->lock);
  c->connected = TRUE;
  g_mutex_unlock(&c->lock);
}

static void
client_on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
  MqttClient *c = obj;

  g_mutex_lock(&c->lock);
  c->connected = FALSE;
  g_mutex_unlock(&c->lock);
}

static void
client_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                  const mosquitto_property *props)
{
  MqttClient *c = obj;
  MqttMsg *m = g_new0(MqttMsg, 1);
  void *corr = NULL;
  guint16 corr_len = 0;
  char *s = NULL;
  const mosquitto_property *p;

  m->topic = g_strdup(msg->topic);
  m->payload = g_bytes_new(msg->payload, (gsize)msg->payloadlen);
  m->retain = msg->retain;
  m->qos = msg->qos;
  m->user = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &s, false)) {
    m->response_topic = g_strdup(s);
    free(s);
  }
  if (mosquitto_property_read_string(props, MQTT_PROP_CONTENT_TYPE, &s, false)) {
    m->content_type = g_strdup(s);
    free(s);
  }
  if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false)) {
    m->correlation = g_bytes_new(corr, corr_len);
    free(corr);
  }
  for (p = props; p != NULL; p = mosquitto_property_next(p)) {
    char *k = NULL, *v = NULL;
    if (mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY)
      continue;
    if (mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &k, &v, false)) {
      g_hash_table_replace(m->user, g_strdup(k), g_strdup(v));
      free(k);
      free(v);
    }
  }
  g_mutex_lock(&c->lock);
  g_queue_push_tail(&c->msgs, m);
  g_mutex_unlock(&c->lock);
}

static gpointer
client_thread(gpointer data)
{
  MqttClient *c = data;

  for (;;) {
    gboolean stop;
    int rc;
    g_mutex_lock(&c->lock);
    stop = c->stop;
    g_mutex_unlock(&c->lock);
    if (stop)
      break;
    rc = mosquitto_loop(c->mosq, 50, 1);
    if (rc != MOSQ_ERR_SUCCESS) {
      g_usleep(100000);
      mosquitto_reconnect_async(c->mosq);
    }
  }
  return NULL;
}

MqttClient *
mqtt_client_new(int port, const MqttClientOptions *opts, const char *const *filters)
{
  MqttClientOptions none = {0};
  MqttClient *c = g_new0(MqttClient, 1);
  g_autofree char *id = NULL;
  mosquitto_property *props = NULL;

  lib_init();
  if (opts == NULL)
    opts = &none;
  id = opts->client_id ? g_strdup(opts->client_id) : g_strdup_printf("test-%08x", g_random_int());
  g_mutex_init(&c->lock);
  c->port = port;
  c->filters = g_strdupv((char **)filters);
  c->mosq = mosquitto_new(id, !opts->persistent, c);
  g_assert_nonnull(c->mosq);
  mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_threaded_set(c->mosq, true);
  mosquitto_connect_v5_callback_set(c->mosq, client_on_connect);
  mosquitto_disconnect_v5_callback_set(c->mosq, client_on_disconnect);
  mosquitto_message_v5_callback_set(c->mosq, client_on_message);
  if (opts->username)
    mosquitto_username_pw_set(c->mosq, opts->username, opts->password);
  if (opts->cafile)
    g_assert_cmpint(
        mosquitto_tls_set(c->mosq, opts->cafile, NULL, opts->certfile, opts->keyfile, NULL), ==,
        MOSQ_ERR_SUCCESS);
  if (opts->persistent)
    mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 300);
  mosquitto_connect_bind_v5(c->mosq, "127.0.0.1", port, 10, NULL, props);
  mosquitto_property_free_all(&props);
  c->thread = g_thread_new("test-mqtt-client", client_thread, c);
  return c;
}

gboolean
mqtt_client_wait_connected(MqttClient *c, guint timeout_ms)
{
  gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

  while (g_get_monotonic_time() < until) {
    gboolean ok;
    g_mutex_lock(&c->lock);
    ok = c->connected;
    g_mutex_unlock(&c->lock);
    if (ok) {
      g_usleep(50000); /* let the SUBACK arrive */
      return TRUE;
    }
    g_usleep(5000);
  }
  return FALSE;
}

static MqttMsg *
take_first(MqttClient *c, const char *topic)
{
  MqttMsg *m = NULL;

  g_mutex_lock(&c->lock);
  for (GList *l = c->msgs.head; l != NULL; l = l->next) {
    MqttMsg *x = l->data;
    if (topic == NULL || strcmp(x->topic, topic) == 0) {
      m = x;
      g_queue_delete_link(&c->msgs, l);
      break;
    }
  }
  g_mutex_unlock(&c->lock);
  return m;
}

MqttMsg *
mqtt_client_wait(MqttClient *c, const char *topic, guint timeout_ms, GMainContext *context)
{
  gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

  do {
    MqttMsg *m = take_first(c, topic);
    if (m != NULL)
      return m;
    if (context)
      while (g_main_context_iteration(context, FALSE))
        ;
    g_usleep(2000);
  } while (g_get_monotonic_time() < until);
  return NULL;
}

GPtrArray *
mqtt_client_take(MqttClient *c, const char *topic)
{
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)mqtt_msg_free);
  MqttMsg *m;

  while ((m = take_first(c, topic)) != NULL)
    g_ptr_array_add(out, m);
  return out;
}

guint
mqtt_client_count(MqttClient *c, const char *topic)
{
  guint n = 0;

  g_mutex_lock(&c->lock);
  for (GList *l = c->msgs.head; l != NULL; l = l->next)
    if (topic == NULL || strcmp(((MqttMsg *)l->data)->topic, topic) == 0)
      n++;
  g_mutex_unlock(&c->lock);
  return n;
}

void
mqtt_client_publish(MqttClient *c, const char *topic, const void *payload, int len,
                    const char *response_topic, const void *correlation, int corr_len,
                    gboolean retain)
{
  mosquitto_property *props = NULL;
  int rc;

  if (response_topic)
    mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, response_topic);
  if (correlation)
    mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, correlation,
                                  (guint16)corr_len);
  rc = mosquitto_publish_v5(c->mosq, NULL, topic, len, payload, 1, retain, props);
  g_assert_cmpint(rc, ==, MOSQ_ERR_SUCCESS);
  mosquitto_property_free_all(&props);
}

void
mqtt_client_free(MqttClient *c)
{
  if (c == NULL)
    return;
  mosquitto_disconnect(c->mosq);
  g_usleep(20000);
  g_mutex_lock(&c->lock);
  c->stop = TRUE;
  g_mutex_unlock(&c->lock);
  g_thread_join(c->thread);
  mosquitto_destroy(c->mosq);
  g_queue_clear_full(&c->msgs, (GDestroyNotify)mqtt_msg_free);
  g_strfreev(c->filters);
  g_mutex_clear(&c->lock);
  g_free(c);
}

gboolean
mqtt_test_wait_until(gboolean (*done)(gpointer), gpointer data, guint timeout_ms,
                     GMainContext *context)
{
  gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

  do {
    if (context)
      while (g_main_context_iteration(context, FALSE))
        ;
    if (done(data))
      return TRUE;
    g_usleep(2000);
  } while (g_get_monotonic_time() < until);
  return done(data);
}
