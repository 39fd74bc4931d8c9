package io.talos.hadoop;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.OutputStream;
import java.net.URI;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * The other design measured in bench/hdfs_client.py: the Hadoop client in a helper JVM
 * that the broker talks to over a pipe. Usage: {@code HflushHelper URI PATH}. Frames on
 * stdin: op (1 byte: 0 append, 1 append+hflush, 2 append+hsync), length (4 bytes, big
 * endian), data; ops 1 and 2 answer one byte 0 on stdout after the flush.
 */
public final class HflushHelper {
  private HflushHelper() {}

  public static void main(String[] args) throws Exception {
    FileSystem fs = FileSystem.newInstance(new URI(args[0]), new Configuration());
    FSDataOutputStream out = fs.create(new Path(args[1]), false);
    DataInputStream in = new DataInputStream(new BufferedInputStream(System.in, 1 << 20));
    OutputStream reply = new BufferedOutputStream(System.out);
    byte[] buf = new byte[1 << 20];
    while (true) {
      int op = in.read();
      if (op < 0) {
        break;
      }
      int n = in.readInt();
      in.readFully(buf, 0, n);
      out.write(buf, 0, n);
      if (op == 1) {
        out.hflush();
      } else if (op == 2) {
        out.hsync();
      }
      if (op != 0) {
        reply.write(0);
        reply.flush();
      }
    }
    out.close();
    fs.close();
  }
}
