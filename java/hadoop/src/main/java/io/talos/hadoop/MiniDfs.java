package io.talos.hadoop;

import java.io.File;
import java.io.InputStream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * Runs a MiniDFSCluster (one NameNode, N DataNodes, one JVM) for tests and the dev
 * cluster, because the shaded hadoop-client-minicluster jar has no main class.
 *
 * <p>Usage: {@code MiniDfs BASE_DIR DATANODES}. When the cluster is up it prints one
 * line to stdout: {@code READY hdfs://127.0.0.1:PORT 127.0.0.1:HTTP_PORT}. It stops
 * when its stdin closes (the parent died or asked it to) or on SIGTERM, so no
 * NameNode outlives the Python process that started it.
 */
public final class MiniDfs {
  private MiniDfs() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: MiniDfs BASE_DIR DATANODES");
      System.exit(2);
    }
    File base = new File(args[0]);
    int dataNodes = Integer.parseInt(args[1]);
    Configuration conf = new Configuration();
    conf.set("dfs.namenode.rpc-address", "127.0.0.1:0");
    conf.set("dfs.namenode.http-address", "127.0.0.1:0");
    conf.set("dfs.datanode.address", "127.0.0.1:0");
    conf.set("dfs.datanode.http.address", "127.0.0.1:0");
    conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
    // Fast block recovery after recoverLease(): the NameNode hands the recovery
    // command to a DataNode on its next heartbeat.
    conf.setLong("dfs.heartbeat.interval", 1);
    conf.setInt("dfs.namenode.heartbeat.recheck-interval", 3000);
    // Small blocks keep three DataNodes' disks small; segments still span blocks.
    conf.setLong("dfs.blocksize", 16L << 20);
    conf.setInt("dfs.replication", Math.min(3, dataNodes));
    conf.setBoolean("dfs.permissions.enabled", true);
    MiniDFSCluster cluster =
        new MiniDFSCluster.Builder(conf, base)
            .numDataNodes(dataNodes)
            .nameNodePort(0)
            .nameNodeHttpPort(0)
            .format(true)
            .build();
    Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown, "minidfs-shutdown"));
    cluster.waitActive();
    String uri = "hdfs://127.0.0.1:" + cluster.getNameNodePort();
    String http =
        cluster.getNameNode().getHttpAddress().getHostString()
            + ":"
            + cluster.getNameNode().getHttpAddress().getPort();
    System.out.println("READY " + uri + " " + http);
    System.out.flush();
    InputStream in = System.in;
    byte[] buf = new byte[256];
    while (in.read(buf) >= 0) {
      // Only EOF matters.
    }
    System.exit(0);
  }
}
