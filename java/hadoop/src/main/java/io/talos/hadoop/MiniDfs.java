package io.talos.hadoop;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.server.datanode.DataNode;

/**
 * Runs a MiniDFSCluster (one NameNode, N DataNodes, one JVM) for tests, the dev cluster
 * and the chaos harness, because the shaded hadoop-client-minicluster jar has no main
 * class.
 *
 * <p>Usage: {@code MiniDfs BASE_DIR DATANODES [HOST]}. HOST defaults to 127.0.0.1, where
 * everything listens. Another HOST (the chaos harness: a network namespace's address)
 * makes the NameNode and the DataNodes listen on every address and the DataNodes
 * register HOST as their hostname; MiniDFSCluster itself registers them under
 * 127.0.0.1, so clients elsewhere set {@code dfs.client.use.datanode.hostname=true}.
 * When the cluster is up it prints one line to stdout:
 * {@code READY hdfs://HOST:PORT HOST:HTTP_PORT}.
 *
 * <p>Then it reads commands from stdin, one a line, and answers each with one line,
 * {@code OK ...} or {@code ERR ...} (the faults of the chaos harness):
 *
 * <ul>
 *   <li>{@code stop-datanode I}: shut DataNode I (modulo the running ones) down; its
 *       clients see their write pipelines break;
 *   <li>{@code restart-datanodes}: start every stopped DataNode again, on its old ports;
 *   <li>{@code stop-namenode}: shut the NameNode down (clients get connection refused);
 *   <li>{@code start-namenode}: start it again on the same ports and wait until the
 *       DataNodes have registered and it has left safe mode;
 *   <li>{@code ping}: {@code OK}.
 * </ul>
 *
 * <p>It stops when its stdin closes (the parent died or asked it to) or on SIGTERM, so no
 * NameNode outlives the Python process that started it.
 */
public final class MiniDfs {
  private MiniDfs() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 2 || args.length > 3) {
      System.err.println("usage: MiniDfs BASE_DIR DATANODES [BIND_HOST]");
      System.exit(2);
    }
    File base = new File(args[0]);
    int dataNodes = Integer.parseInt(args[1]);
    String host = args.length == 3 ? args[2] : "127.0.0.1";
    boolean local = host.equals("127.0.0.1");
    String bind = local ? host : "0.0.0.0";
    Configuration conf = new Configuration();
    conf.set("dfs.namenode.rpc-address", "127.0.0.1:0");
    conf.set("dfs.namenode.http-address", "127.0.0.1:0");
    if (!local) {
      conf.set("dfs.namenode.rpc-bind-host", bind);
      conf.set("dfs.namenode.http-bind-host", bind);
      conf.setBoolean("dfs.namenode.datanode.registration.ip-hostname-check", false);
    }
    conf.set("dfs.datanode.address", bind + ":0");
    conf.set("dfs.datanode.http.address", bind + ":0");
    conf.set("dfs.datanode.ipc.address", bind + ":0");
    // Fast block recovery after recoverLease(): the NameNode hands the recovery
    // command to a DataNode on its next heartbeat.
    conf.setLong("dfs.heartbeat.interval", 1);
    conf.setInt("dfs.namenode.heartbeat.recheck-interval", 3000);
    // A restarted NameNode leaves safe mode as soon as the blocks are reported.
    conf.setInt("dfs.namenode.safemode.extension", 0);
    // Small blocks keep three DataNodes' disks small; segments still span blocks.
    conf.setLong("dfs.blocksize", 16L << 20);
    conf.setInt("dfs.replication", Math.min(3, dataNodes));
    conf.setBoolean("dfs.permissions.enabled", true);
    MiniDFSCluster.Builder builder = new MiniDFSCluster.Builder(conf, base);
    if (!local) {
      String[] hosts = new String[dataNodes];
      java.util.Arrays.fill(hosts, host);
      builder.hosts(hosts);
    }
    MiniDFSCluster cluster =
        builder
            .numDataNodes(dataNodes)
            .nameNodePort(0)
            .nameNodeHttpPort(0)
            .checkDataNodeAddrConfig(true)
            .format(true)
            .build();
    Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown, "minidfs-shutdown"));
    cluster.waitActive();
    String uri = "hdfs://" + host + ":" + cluster.getNameNodePort();
    String http = host + ":" + cluster.getNameNode().getHttpAddress().getPort();
    System.out.println("READY " + uri + " " + http);
    System.out.flush();
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    List<MiniDFSCluster.DataNodeProperties> stopped = new ArrayList<>();
    boolean nameNodeUp = true;
    String line;
    while ((line = in.readLine()) != null) {
      String[] words = line.trim().split("\\s+");
      String reply;
      try {
        switch (words[0]) {
          case "ping":
            reply = "OK";
            break;
          case "stop-datanode":
            {
              List<DataNode> running = cluster.getDataNodes();
              if (running.size() <= 1) {
                reply = "ERR only one DataNode is running";
                break;
              }
              int index = Math.floorMod(Integer.parseInt(words[1]), running.size());
              String name = running.get(index).getDisplayName();
              stopped.add(cluster.stopDataNode(index));
              reply = "OK stopped " + name;
              break;
            }
          case "restart-datanodes":
            {
              int count = stopped.size();
              for (MiniDFSCluster.DataNodeProperties props : stopped) {
                cluster.restartDataNode(props, true);
              }
              stopped.clear();
              if (nameNodeUp) {
                cluster.waitActive();
              }
              reply = "OK restarted " + count;
              break;
            }
          case "stop-namenode":
            cluster.shutdownNameNode(0);
            nameNodeUp = false;
            reply = "OK stopped";
            break;
          case "start-namenode":
            if (nameNodeUp) {
              reply = "OK already running";
              break;
            }
            cluster.restartNameNode(0, true);
            nameNodeUp = true;
            reply = "OK started on port " + cluster.getNameNodePort();
            break;
          default:
            reply = "ERR unknown command " + words[0];
        }
      } catch (Exception e) {
        reply = "ERR " + e.getClass().getSimpleName() + ": " + String.valueOf(e.getMessage());
      }
      System.out.println(reply.replace('\n', ' '));
      System.out.flush();
    }
    System.exit(0);
  }
}
