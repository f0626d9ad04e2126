export {
  Scene, PerspectiveCamera, WebGLRenderer, BufferGeometry, BufferAttribute, Mesh, ShaderMaterial,
  LineSegments, LineBasicMaterial, Group, Raycaster, Vector2, Vector3, Quaternion, Matrix4,
  DataTexture, RGBAFormat, LinearFilter, DoubleSide, LinearSRGBColorSpace, ColorManagement, REVISION
} from "three";
