/* tests/support: a real mosquitto broker on a free loopback port, and a
 * collecting MQTT v5 client (libmosquitto) that keeps every message with its
 * properties. Linked by the integration tests and the benchmarks. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  gboolean persistence;                    /* keep sessions across a restart (SIGTERM saves) */
  const char *password_file;               /* mosquitto_passwd file; turns anonymous off */
  const char *cafile, *certfile, *keyfile; /* TLS listener when certfile is set */
  gboolean require_certificate;
  const char *acl_file; /* mosquitto acl_file */
} MqttBrokerOptions;

typedef struct _MqttBroker MqttBroker;

/* Starts mosquitto with a generated config in a fresh temp dir and waits
 * until it accepts connections. @opts may be NULL. */
MqttBroker *mqtt_broker_start(const MqttBrokerOptions *opts, GError **error);
int mqtt_broker_get_port(MqttBroker *broker);
const char *mqtt_broker_get_dir(MqttBroker *broker);
/* Sends @sig (SIGTERM or SIGKILL) and reaps the process. */
void mqtt_broker_stop(MqttBroker *broker, int sig);
/* Starts it again on the same port with the same config. */
gboolean mqtt_broker_restart(MqttBroker *broker, GError **error);
void mqtt_broker_free(MqttBroker *broker);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MqttBroker, mqtt_broker_free)

typedef struct {
  char *topic;
  GBytes *payload;
  gboolean retain;
  int qos;
  char *response_topic;
  GBytes *correlation;
  char *content_type;
  GHashTable *user; /* user properties name -> value */
} MqttMsg;

void mqtt_msg_free(MqttMsg *msg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MqttMsg, mqtt_msg_free)

typedef struct {
  const char *client_id; /* NULL: random, clean session */
  gboolean persistent;   /* clean start off, session expiry 300 s */
  const char *username, *password;
  const char *cafile, *certfile, *keyfile;
} MqttClientOptions;

typedef struct _MqttClient MqttClient;

/* Connects (retrying in the background) and subscribes to @filters (QoS 1,
 * retain as published) on every connect. */
MqttClient *mqtt_client_new(int port, const MqttClientOptions *opts, const char *const *filters);
gboolean mqtt_client_wait_connected(MqttClient *client, guint timeout_ms);
/* First message on @topic (NULL: any), removed from the queue; NULL after
 * @timeout_ms. Iterates @context (nullable) while it waits. */
MqttMsg *mqtt_client_wait(MqttClient *client, const char *topic, guint timeout_ms,
                          GMainContext *context);
/* Every queued message on @topic (NULL: all), removed. */
GPtrArray *mqtt_client_take(MqttClient *client, const char *topic);
guint mqtt_client_count(MqttClient *client, const char *topic);
void mqtt_client_publish(MqttClient *client, const char *topic, const void *payload, int len,
                         const char *response_topic, const void *correlation, int corr_len,
                         gboolean retain);
void mqtt_client_free(MqttClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MqttClient, mqtt_client_free)

/* Iterates @context (nullable) until @done(@data) or @timeout_ms. */
gboolean mqtt_test_wait_until(gboolean (*done)(gpointer), gpointer data, guint timeout_ms,
                              GMainContext *context);
/* rm -rf of a temp dir the tests made. */
void mqtt_test_rm_rf(const char *dir);
/* A TCP port on 127.0.0.1 free right now (0 when none could be had). */
int mqtt_test_free_port(void);
/* Whether something accepts connections on 127.0.0.1:@port. */
gboolean mqtt_test_port_accepts(int port);

G_END_DECLS
