// Iceberg's REST catalog server for the local stack (stack/iceberg_rest.py starts it).
//
// It serves Iceberg's own RESTCatalogServlet over RESTCatalogAdapter (from the tests jar
// of iceberg-core, the code behind the official rest fixture image) in front of the
// catalog that the properties file describes: a JdbcCatalog on sqlite whose FileIO is
// S3FileIO. The official server's main binds every interface; this one binds the host
// it is given. Run as a single source file: java -cp "<jars>/*" IcebergRestServer.java
// HOST PORT CATALOG_PROPERTIES

import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import org.apache.iceberg.CatalogUtil;
import org.apache.iceberg.catalog.Catalog;
import org.apache.iceberg.rest.RESTCatalogAdapter;
import org.apache.iceberg.rest.RESTCatalogServlet;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

public final class IcebergRestServer {
  private IcebergRestServer() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 3) {
      System.err.println("usage: IcebergRestServer HOST PORT CATALOG_PROPERTIES");
      System.exit(2);
    }
    Properties file = new Properties();
    try (Reader reader = Files.newBufferedReader(Path.of(args[2]))) {
      file.load(reader);
    }
    Map<String, String> props = new HashMap<>();
    for (String key : file.stringPropertyNames()) {
      props.put(key, file.getProperty(key));
    }
    // The backend catalog's name: a column of the JDBC catalog's tables.
    String name = props.getOrDefault("catalog.name", "rest_backend");
    props.remove("catalog.name");
    Catalog catalog = CatalogUtil.buildIcebergCatalog(name, props, null);

    ServletContextHandler context = new ServletContextHandler();
    context.addServlet(new ServletHolder(new RESTCatalogServlet(new RESTCatalogAdapter(catalog))), "/*");
    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost(args[0]);
    connector.setPort(Integer.parseInt(args[1]));
    server.addConnector(connector);
    server.setHandler(context);
    server.start();
    System.out.println("Iceberg REST catalog serving http://" + args[0] + ":" + args[1]);
    server.join();
  }
}
