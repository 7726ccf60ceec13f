
set terminal pngcairo size 1500,1000 font 'sans,11' noenhanced
set output '/work/main/bench/results/scale/results.png'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1.5
set style fill solid 0.9 border -1
set boxwidth 0.9
set key outside right top vertical
set grid ytics
set logscale y 2
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb 'black' front
set multiplot layout 1,1 title "zk-nalloc vs peers, time divided by a reference (1 = reference, log scale, lower is better)\nIntel(R) Xeon(R) Processor, 16 cores, kernel 6.18.44-fc-v657-gpu, THP anon madvise, shmem never"
set title 'allocation patterns: time / physical floor (contention: floor GB/s / measured GB/s)'
set ylabel 'x floor'
set yrange [0.5:*]
set xrange [-0.6:5.600000]
plot '/work/main/bench/results/scale/chart_top.dat' using 2:xtic(1) title 'glibc' lc rgb '#444444', '/work/main/bench/results/scale/chart_top.dat' using 3:xtic(1) title 'glibc+thp' lc rgb '#999999', '/work/main/bench/results/scale/chart_top.dat' using 4:xtic(1) title 'jemalloc' lc rgb '#1f5fa8', '/work/main/bench/results/scale/chart_top.dat' using 5:xtic(1) title 'jemalloc+thp' lc rgb '#7fb0e6', '/work/main/bench/results/scale/chart_top.dat' using 6:xtic(1) title 'mimalloc' lc rgb '#2e8b57', '/work/main/bench/results/scale/chart_top.dat' using 7:xtic(1) title 'mimalloc+thp' lc rgb '#98d8a8', '/work/main/bench/results/scale/chart_top.dat' using 8:xtic(1) title 'tcmalloc' lc rgb '#8a5fb5', '/work/main/bench/results/scale/chart_top.dat' using 9:xtic(1) title 'zk-nalloc' lc rgb '#e07b00', '/work/main/bench/results/scale/chart_top.dat' using 10:xtic(1) title 'zk-nalloc+daemon' lc rgb '#d62728'

unset multiplot
