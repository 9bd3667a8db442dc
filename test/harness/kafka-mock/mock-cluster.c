/*
 * A Kafka-protocol test cluster for reprise's tests: librdkafka's built-in
 * mock cluster (rdkafka_mock.h) behind a line protocol on stdin/stdout.
 *
 *   mock-cluster [brokers [address]]   (default 3 brokers, ids 1..brokers;
 *                                        address: IPv4, default 127.0.0.1)
 *
 * Once listening it prints one JSON line, {"bootstrap":"<address>:port,..."},
 * then answers each command line on stdin with one JSON line,
 * {"ok":true} or {"ok":false,"error":"..."}. Commands (space separated):
 *
 *   create_topic <name> <partitions> <replication_factor>
 *   broker_down <id>            broker_up <id>
 *   leader <topic> <partition> <broker_id>
 *   rtt <broker_id> <ms>
 *   push_errors <api_key> <count> <error>...   (next <count> requests of
 *                                               that API fail, in order)
 *   clear_errors <api_key>
 *   topic_error <topic> <error>
 *   quit
 *
 * An <error> is a librdkafka error code number (e.g. 6) or its name
 * (NOT_LEADER_FOR_PARTITION, _TRANSPORT to drop the connection).
 * The cluster exits on `quit` or when stdin reaches EOF, so it never
 * outlives the test process that started it.
 *
 * The brokers listen on, and advertise, `address`. librdkafka's mock (2.0,
 * Debian 12) binds every broker to 127.0.0.1, with no option to change it,
 * and advertises the address it bound. A loopback address is reachable only
 * inside its own network namespace, so processes in a test network's
 * namespaces (test/harness/netns.ts) could reach no broker, wherever the mock
 * ran. So this program defines bind() itself, which moves a bind to
 * 127.0.0.1 to `address`: the linker exports the executable's bind() because
 * librdkafka.so needs the symbol, and the dynamic loader then resolves
 * librdkafka's calls to it ahead of libc's. The mock reads the bound address
 * back (getsockname) and advertises that.
 *
 * Built by test/harness/kafka-mock.ts with
 *   gcc -O1 -o mock-cluster mock-cluster.c $(pkg-config --cflags --libs rdkafka)
 */
#define _GNU_SOURCE /* syscall() */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_LINE 8192
#define MAX_WORDS 256

static rd_kafka_mock_cluster_t *mcluster;
static struct in_addr listen_address; /* 127.0.0.1 unless argv[2] says otherwise */

/* Every bind() of this process, librdkafka's included: a bind to 127.0.0.1
 * (the mock brokers' listeners) goes to listen_address instead. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
        if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
                struct sockaddr_in moved = *(const struct sockaddr_in *)addr;
                if (moved.sin_addr.s_addr == htonl(INADDR_LOOPBACK)) {
                        moved.sin_addr = listen_address;
                        return (int)syscall(SYS_bind, fd, &moved, sizeof(moved));
                }
        }
        return (int)syscall(SYS_bind, fd, addr, len);
}

/* Print a JSON string literal (quotes included) for `s`. */
static void print_json_string(const char *s) {
        putchar('"');
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\')
                        printf("\\%c", c);
                else if (c == '\n')
                        fputs("\\n", stdout);
                else if (c < 0x20)
                        printf("\\u%04x", c);
                else
                        putchar(c);
        }
        putchar('"');
}

static int reply_ok(void) {
        fputs("{\"ok\":true}\n", stdout);
        fflush(stdout);
        return 0;
}

static int reply_error(const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        fputs("{\"ok\":false,\"error\":", stdout);
        print_json_string(msg);
        fputs("}\n", stdout);
        fflush(stdout);
        return 0;
}

/* Reply for a call returning rd_kafka_resp_err_t. */
static int reply_err(const char *what, rd_kafka_resp_err_t err) {
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                return reply_ok();
        return reply_error("%s: %s (%s)", what, rd_kafka_err2name(err), rd_kafka_err2str(err));
}

/* Parse a whole decimal integer within [min, max]; 0 on failure. */
static int parse_int(const char *s, long min, long max, long *out) {
        char *end;
        long v;
        errno = 0;
        v     = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
                return 0;
        *out = v;
        return 1;
}

/* An error code given as a number or as librdkafka's name for it. */
static int parse_error_code(const char *s, rd_kafka_resp_err_t *out) {
        long v;
        const struct rd_kafka_err_desc *descs;
        size_t cnt, i;
        if (parse_int(s, INT16_MIN, INT16_MAX, &v)) {
                *out = (rd_kafka_resp_err_t)v;
                return 1;
        }
        rd_kafka_get_err_descs(&descs, &cnt);
        for (i = 0; i < cnt; i++) {
                if (descs[i].name && strcmp(descs[i].name, s) == 0) {
                        *out = descs[i].code;
                        return 1;
                }
        }
        return 0;
}

/* Run one command and print its reply line. */
static int handle(char **w, int n) {
        long a, b, c;
        const char *cmd = w[0];

        if (strcmp(cmd, "create_topic") == 0) {
                if (n != 4 || !parse_int(w[2], 1, 100000, &a) || !parse_int(w[3], 1, 1000, &b))
                        return reply_error("usage: create_topic <name> <partitions> <replication_factor>");
                return reply_err("create_topic", rd_kafka_mock_topic_create(mcluster, w[1], (int)a, (int)b));
        }
        if (strcmp(cmd, "broker_down") == 0 || strcmp(cmd, "broker_up") == 0) {
                int down = cmd[7] == 'd';
                if (n != 2 || !parse_int(w[1], -1, INT32_MAX, &a))
                        return reply_error("usage: %s <broker_id>", cmd);
                return reply_err(cmd, down ? rd_kafka_mock_broker_set_down(mcluster, (int32_t)a)
                                           : rd_kafka_mock_broker_set_up(mcluster, (int32_t)a));
        }
        if (strcmp(cmd, "leader") == 0) {
                if (n != 4 || !parse_int(w[2], 0, INT32_MAX, &a) || !parse_int(w[3], -1, INT32_MAX, &b))
                        return reply_error("usage: leader <topic> <partition> <broker_id>");
                return reply_err("leader",
                                 rd_kafka_mock_partition_set_leader(mcluster, w[1], (int32_t)a, (int32_t)b));
        }
        if (strcmp(cmd, "rtt") == 0) {
                if (n != 3 || !parse_int(w[1], -1, INT32_MAX, &a) || !parse_int(w[2], 0, 3600000, &b))
                        return reply_error("usage: rtt <broker_id> <ms>");
                return reply_err("rtt", rd_kafka_mock_broker_set_rtt(mcluster, (int32_t)a, (int)b));
        }
        if (strcmp(cmd, "push_errors") == 0) {
                rd_kafka_resp_err_t errs[MAX_WORDS];
                int i;
                if (n < 3 || !parse_int(w[1], 0, INT16_MAX, &a) || !parse_int(w[2], 1, MAX_WORDS, &c) ||
                    n != 3 + c)
                        return reply_error("usage: push_errors <api_key> <count> <error>... (count errors)");
                for (i = 0; i < c; i++) {
                        if (!parse_error_code(w[3 + i], &errs[i]))
                                return reply_error("push_errors: unknown error code %s", w[3 + i]);
                }
                rd_kafka_mock_push_request_errors_array(mcluster, (int16_t)a, (size_t)c, errs);
                return reply_ok();
        }
        if (strcmp(cmd, "clear_errors") == 0) {
                if (n != 2 || !parse_int(w[1], 0, INT16_MAX, &a))
                        return reply_error("usage: clear_errors <api_key>");
                rd_kafka_mock_clear_request_errors(mcluster, (int16_t)a);
                return reply_ok();
        }
        if (strcmp(cmd, "topic_error") == 0) {
                rd_kafka_resp_err_t err;
                if (n != 3 || !parse_error_code(w[2], &err))
                        return reply_error("usage: topic_error <topic> <error>");
                rd_kafka_mock_topic_set_error(mcluster, w[1], err);
                return reply_ok();
        }
        return reply_error("unknown command: %s", cmd);
}

int main(int argc, char **argv) {
        char errstr[512];
        char line[MAX_LINE];
        long brokers = 3;
        rd_kafka_conf_t *conf;
        rd_kafka_t *rk;

        listen_address.s_addr = htonl(INADDR_LOOPBACK);
        if (argc > 3 || (argc >= 2 && !parse_int(argv[1], 1, 100, &brokers)) ||
            (argc == 3 && inet_pton(AF_INET, argv[2], &listen_address) != 1)) {
                fprintf(stderr, "usage: %s [brokers (1..100, default 3) [IPv4 address (default 127.0.0.1)]]\n", argv[0]);
                return 2;
        }

        /* The mock cluster lives inside a client handle; a producer with an
         * empty configuration is the cheapest one. It never produces. */
        conf = rd_kafka_conf_new();
        /* Warnings and worse only: the handle has no bootstrap.servers on
         * purpose, and librdkafka would say so at notice level. */
        if (rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
                fprintf(stderr, "mock-cluster: %s\n", errstr);
        rk   = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "mock-cluster: rd_kafka_new failed: %s\n", errstr);
                return 1;
        }
        mcluster = rd_kafka_mock_cluster_new(rk, (int)brokers);
        if (!mcluster) {
                fprintf(stderr, "mock-cluster: rd_kafka_mock_cluster_new failed\n");
                rd_kafka_destroy(rk);
                return 1;
        }

        fputs("{\"bootstrap\":", stdout);
        print_json_string(rd_kafka_mock_cluster_bootstraps(mcluster));
        fputs("}\n", stdout);
        fflush(stdout);

        while (fgets(line, sizeof(line), stdin)) {
                char *words[MAX_WORDS];
                char *save = NULL;
                char *tok;
                int n = 0;
                if (!strchr(line, '\n') && !feof(stdin)) {
                        int ch;
                        while ((ch = getchar()) != EOF && ch != '\n')
                                ;
                        reply_error("command line longer than %d bytes", MAX_LINE - 2);
                        continue;
                }
                for (tok = strtok_r(line, " \t\r\n", &save); tok && n < MAX_WORDS;
                     tok = strtok_r(NULL, " \t\r\n", &save))
                        words[n++] = tok;
                if (n == 0) {
                        reply_error("empty command");
                        continue;
                }
                if (strcmp(words[0], "quit") == 0) {
                        reply_ok();
                        break;
                }
                handle(words, n);
        }

        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(rk);
        return 0;
}
